"""Tiny randomly initialised models (a Llama with a chat template, a base Gemma 3) with byte-level BPE tokenizers,
built locally: no download; and the packaging of a file as split pip packages, as the embedded models ship."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

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


def tiny_bpe(seed: int, extra: str, specials: list[str]) -> Any:
    """A 400-token byte-level BPE trained on seeded sentences of WORDS plus `extra`; `specials` take ids 0, 1, ..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    corpus = [sentence(rng.choice(sorted(WORDS)), rng) for _ in range(300)] + [extra] * 5
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    return backend


def build_tiny_model(directory: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    extra = "Classify the text as one of: negative, neutral, positive. Text: user assistant system"
    backend = tiny_bpe(seed, extra, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
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


def write_tiny_gguf(model_dir: Path, path: Path) -> Path:
    """The tiny Llama of `build_tiny_model` as an f32 GGUF, written with the `gguf` package as llama.cpp's
    converter writes Llama models (Q/K rows permuted for its rotary layout; transformers undoes that)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    heads, kv_heads, blocks = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float(config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta")))
    writer.add_vocab_size(config["vocab_size"])
    vocab = {**tokenizer["model"]["vocab"], **{t["content"]: t["id"] for t in tokenizer["added_tokens"]}}
    tokens = sorted(vocab, key=vocab.get)
    specials = {t["content"] for t in tokenizer["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    merges = tokenizer["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(vocab[tokenizer_config["bos_token"]])
    writer.add_eos_token_id(vocab[tokenizer_config["eos_token"]])
    writer.add_pad_token_id(vocab[tokenizer_config["pad_token"]])
    writer.add_chat_template(tokenizer_config.get("chat_template") or CHATML)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)

    def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
        rows = weights.shape[0] // n_head // 2
        return weights.reshape(n_head, 2, rows, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)

    for name, tensor in load_file(model_dir / "model.safetensors").items():
        if name.endswith("q_proj.weight"):
            tensor = permute(tensor, heads)
        elif name.endswith("k_proj.weight"):
            tensor = permute(tensor, kv_heads)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), tensor.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


GEMMA_LAYERS = ["sliding_attention", "sliding_attention", "full_attention"]


def build_tiny_gemma(directory: Path, seed: int = 0, sliding_window: int = 8) -> Path:
    """A tiny random Gemma 3 laid out as Gemma 3 270M is: a base model (no chat template) whose tokenizer adds
    <bos>, with <pad>, <eos>, <bos> at ids 0, 1, 2, GQA with one key/value head, tied embeddings and sliding-window
    layers (window `sliding_window`, short enough that prompts of the tiny data sets exceed it) before a full one.
    The tokenizer is byte-level BPE, not Gemma's SentencePiece: what the tests need is its special-token layout."""
    import torch
    from tokenizers import processors
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    backend = tiny_bpe(
        seed, "Classify the text as one of: negative, neutral, positive. Text: Label:", ["<pad>", "<eos>", "<bos>"]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=len(GEMMA_LAYERS),
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        layer_types=GEMMA_LAYERS,
        sliding_window=sliding_window,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        initializer_range=0.3,  # as build_tiny_model: tiny logits near uniform would leave nothing to learn
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def package_in_parts(data: bytes, root: Path, prefix: str, file_name: str, parts: int = 3) -> Any:
    """`data` split into `parts` importable packages `<prefix>_part<N>` (with a `<prefix>` package that holds no
    part, like a split model's notice package) under `root`, described as an `EmbeddedModel`. Put `root` on
    sys.path for the packages to be found."""
    import hashlib

    from tunewise.models.embedded import EmbeddedModel, Package, Part

    size = -(-len(data) // parts)
    table = []
    for n in range(1, parts + 1):
        chunk = data[(n - 1) * size : n * size]
        package = Package(f"{prefix.replace('_', '-')}-part{n}", "1.0.0", f"{prefix}_part{n}")
        path = f"data/{file_name}.part{n - 1:02d}"
        (root / package.module / "data").mkdir(parents=True, exist_ok=True)
        (root / package.module / "__init__.py").write_text("raise ImportError('never imported')\n")
        (root / package.module / path).write_bytes(chunk)
        table.append(Part(package, path, hashlib.sha256(chunk).hexdigest()))
    notice = Package(prefix.replace("_", "-"), "1.0.0", prefix)
    (root / prefix).mkdir(parents=True, exist_ok=True)
    (root / prefix / "__init__.py").write_text("raise ImportError('never imported')\n")
    return EmbeddedModel(file_name, tuple(table), hashlib.sha256(data).hexdigest(), (notice,))
