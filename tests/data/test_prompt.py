"""tunewise.data.prompt: one rendering for training, evaluation and inference: the user template, the chat
template (or the plain prompt of a base model, system text first), few-shot examples and answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunewise.config import PromptConfig
from tunewise.data.encode import IGNORE_INDEX, encode_records, encode_segments
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.errors import ConfigError, TunewiseError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _record(text: str = "the car was great", label: str = "positive") -> Record:
    return Record("classification", {"text": text, "label": label}, "t.jsonl", 1, {"confidence": 0.9})


def test_template_renders_fields_labels_and_extra_inside_the_chat_template(tokenizer):
    cfg = PromptConfig(template="{{ labels|join('/') }} {{ confidence }}: {{ text }}", system="Be brief.")
    renderer = PromptRenderer(cfg, "classification", tokenizer, ["negative", "positive"])
    prompt = renderer.prompt(_record())
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nnegative/positive 0.9: the car was great"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert renderer.answer("positive") == "positive<|im_end|>"


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ (text|attr('__class__')).__base__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_sandbox_blocks_escape_payloads_with_a_clear_error(tokenizer, payload):
    renderer = PromptRenderer(PromptConfig(template=payload), "classification", tokenizer, ["a"])
    with pytest.raises(ConfigError, match="prompt.template: blocked by the sandbox: .*unsafe"):
        renderer.prompt(_record())


def test_undefined_variable_names_the_record(tokenizer):
    renderer = PromptRenderer(PromptConfig(template="{{ tweet }}"), "classification", tokenizer, ["a"])
    with pytest.raises(TunewiseError, match=r"t.jsonl:1: prompt.template failed: 'tweet' is undefined"):
        renderer.prompt(_record())


def test_syntax_error_in_template_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="prompt.template: line 1"):
        PromptRenderer(PromptConfig(template="{{ text "), "classification", tokenizer, ["a"])


def test_loss_only_on_answer_tokens(tokenizer):
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, ["negative", "positive"])
    encoded = encode_segments(renderer.segments(_record()), tokenizer, 512, [])
    trained = [t for t, lab in zip(encoded.input_ids, encoded.labels, strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "positive<|im_end|>"
    prompt_ids = tokenizer(renderer.prompt(_record()), add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[: len(prompt_ids)] == prompt_ids  # same tokens as evaluation sees


def test_chat_records_train_on_every_assistant_turn(tokenizer):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how"},
        {"role": "assistant", "content": "fine"},
    ]
    renderer = PromptRenderer(PromptConfig(), "chat", tokenizer)
    segments = renderer.segments(Record("chat", {"messages": messages}, "c.jsonl", 1))
    assert [s.text for s in segments if s.train] == ["hello<|im_end|>", "fine<|im_end|>"]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert "".join(s.text for s in segments) == full.rstrip()


def test_answer_cut_by_max_length_is_rejected_not_trained(tokenizer):
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, ["negative", "positive"])
    long_record = _record(text="great " * 200)
    items, rejects = encode_records([_record(), long_record], renderer, tokenizer, max_length=40)
    assert len(items) == 1 and len(rejects) == 1
    assert "answer cut entirely by train.max_length=40" in rejects[0].reason and rejects[0].line == 1


def test_plain_prompt_without_chat_template_ends_with_eos(tokenizer):
    cfg = PromptConfig(template="Text: {{ text }}\nLabel:", chat_template=False)
    renderer = PromptRenderer(cfg, "classification", tokenizer, ["positive"])
    assert renderer.prompt(_record()) == "Text: the car was great\nLabel:"
    assert renderer.answer("positive") == " positive" + tokenizer.eos_token  # "Label: positive", not "Label:positive"
    explicit = PromptRenderer(
        PromptConfig(template="{{ text }}\n", chat_template=False, answer_prefix=""),
        "classification",
        tokenizer,
        ["positive"],
    )
    assert explicit.answer("positive") == "positive" + tokenizer.eos_token


def test_bos_is_not_doubled_when_the_template_renders_it(tokenizer):
    from tunewise.data.encode import encode_prompt

    bos = [tokenizer.bos_token_id]
    text = tokenizer.bos_token + "hello"
    assert encode_prompt(tokenizer, text, bos).count(tokenizer.bos_token_id) == 1
    assert encode_prompt(tokenizer, "hello", bos)[0] == tokenizer.bos_token_id


def test_few_shot_examples_come_before_the_question(tokenizer):
    shots = [_record("awful trip", "negative"), _record("great ride", "positive")]
    cfg = PromptConfig(template="{{ text }}", few_shot=2)
    chat = PromptRenderer(cfg, "classification", tokenizer, ["negative", "positive"], shots).prompt(_record("ok car"))
    assert chat.index("awful trip") < chat.index("negative") < chat.index("great ride") < chat.index("ok car")
    assert chat.count("<|im_start|>assistant") == 3  # two solved turns, then the open one
    plain_cfg = PromptConfig(template="Text: {{ text }}\nLabel:", chat_template=False, few_shot=1)
    plain = PromptRenderer(plain_cfg, "classification", tokenizer, ["negative"], shots).prompt(_record("ok"))
    assert plain == "Text: awful trip\nLabel: negative\n\nText: ok\nLabel:"


def test_classification_shots_cover_the_labels_and_are_reproducible():
    from tunewise.data.variants import draw_shots

    train = [_record(f"bad {i}", "negative") for i in range(50)] + [_record("good", "positive")]
    shots = draw_shots(train, 3, seed=1, labels=["negative", "positive"])
    assert len(shots) == 3 and {s.label for s in shots} == {"negative", "positive"}  # random would miss "positive"
    assert [s.text for s in shots] == [s.text for s in draw_shots(train, 3, seed=1, labels=["negative", "positive"])]
    assert len(draw_shots(train[:2], 5, seed=1, labels=["negative", "positive"])) == 2


def test_fewer_shots_than_labels_still_vary_which_labels_are_shown():
    from tunewise.data.variants import draw_shots

    labels = ["negative", "neutral", "positive"]
    train = [_record(f"{label} {i}", label) for label in labels for i in range(5)]
    shown = {s.label for seed in range(12) for s in draw_shots(train, 2, seed=seed, labels=labels)}
    assert shown == set(labels)  # not always the first two in sorted order
    assert all(len({s.label for s in draw_shots(train, 2, seed=seed, labels=labels)}) == 2 for seed in range(12))


@pytest.fixture(scope="module")
def base_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A base model's tokenizer: no chat template (build_tiny_gemma's)."""
    from support.tiny import build_tiny_gemma

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_gemma(tmp_path_factory.mktemp("base")))
    assert not tokenizer.chat_template
    return tokenizer


def test_auto_uses_the_chat_template_only_where_there_is_one(tokenizer, base_tokenizer):
    cfg = PromptConfig(template="Text: {{ text }}\nLabel:", chat_template="auto")
    chat = PromptRenderer(cfg, "classification", tokenizer, ["positive"])
    plain = PromptRenderer(cfg, "classification", base_tokenizer, ["positive"])
    assert chat.use_chat is True and plain.use_chat is False
    assert chat.prompt(_record()) == PromptRenderer(
        cfg.model_copy(update={"chat_template": True}), "classification", tokenizer, ["positive"]
    ).prompt(_record())
    assert plain.prompt(_record()) == "Text: the car was great\nLabel:"
    assert plain.answer("positive") == " positive<eos>"  # the base model's eos ends the answer


def test_chat_template_true_on_a_base_model_says_to_use_auto_or_false(base_tokenizer):
    with pytest.raises(ConfigError, match=r"has no chat template \(a base model\?\); set prompt.chat_template: auto"):
        PromptRenderer(PromptConfig(), "classification", base_tokenizer, ["positive"])


def test_the_plain_prompt_starts_with_the_system_text_once(tokenizer, base_tokenizer):
    shots = [_record("awful trip", "negative"), _record("great ride", "positive")]
    cfg = PromptConfig(template="Text: {{ text }}\nLabel:", system="Label the sentiment.", few_shot=2)
    for tok, settings in ((base_tokenizer, {"chat_template": "auto"}), (tokenizer, {"chat_template": False})):
        renderer = PromptRenderer(cfg.model_copy(update=settings), "classification", tok, ["negative"], shots)
        assert renderer.prompt(_record("ok")) == (
            "Label the sentiment.\n\nText: awful trip\nLabel: negative\n\nText: great ride\nLabel: positive\n\n"
            "Text: ok\nLabel:"
        )
        segments = renderer.segments(_record("ok"))
        assert segments[0].text.count("Label the sentiment.") == 1 and not segments[0].train
    no_system = PromptRenderer(PromptConfig(chat_template=False, system=""), "classification", tokenizer, ["a"])
    assert not no_system.prompt(_record()).startswith("\n")  # an empty system text adds no blank line
