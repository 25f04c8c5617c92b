from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunewise.evaluate.generate import cut_at_stop, generate


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_left_padded_generation_equals_one_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    texts = ["the car was great", "awful", "my trip today was really very plain and normal", "okay fine"]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=4)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(batched)  # a random model still emits tokens


def test_stop_strings_cut_the_completion():
    assert cut_at_stop("answer here\nQuestion: next", ["\nQuestion:"]) == "answer here"
    assert cut_at_stop("a. b. c", [".", "b"]) == "a"
    assert cut_at_stop("  nothing to cut ", []) == "nothing to cut"
