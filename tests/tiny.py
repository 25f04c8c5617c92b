"""A tiny randomly initialised Llama + byte-level BPE tokenizer, built locally: no download."""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = {
    "positive": ["great", "love", "wonderful", "happy", "excellent"],
    "negative": ["awful", "hate", "terrible", "sad", "broken"],
    "neutral": ["okay", "average", "plain", "normal", "fine"],
}
FILLER = ["the", "car", "ride", "was", "today", "really", "my", "trip", "and", "very"]


def sentence(label: str, rng: random.Random) -> str:
    words = [*rng.sample(FILLER, 4), rng.choice(WORDS[label])]
    rng.shuffle(words)
    return " ".join(words)


def make_classification_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    labels = sorted(WORDS)
    return [{"text": sentence(label, rng), "label": label} for label in (labels[i % 3] for i in range(n))]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(seed)
    corpus = [sentence(rng.choice(sorted(WORDS)), rng) for _ in range(300)]
    corpus += ["Classify the text as one of: negative, neutral, positive. Text: user assistant system"] * 5
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.3,  # the default 0.02 caps tiny-model logits near uniform: nothing to learn
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
