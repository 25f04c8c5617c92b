"""The tokenizer metadata of a GGUF written from a Hugging Face byte-level BPE tokenizer, as llama.cpp reads it.

`gguf.vocab` reads the tokens, merges and special tokens; this module marks added tokens as whole tokens
(CONTROL or USER_DEFINED), pads the vocabulary to the embedding's rows, and names the llama.cpp pre-tokenizer
that splits text as tokenizer.json does. It also holds the small readers of the merged folder that the GGUF
writer shares with it: every failure becomes a one-line ExportError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf

from tunewise.errors import ExportError

# tokenizers' pre-tokenizer regexes, and the llama.cpp pre-tokenizer that splits text the same way.
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_LLAMA3_SPLIT = _CONTRACTIONS + r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = _CONTRACTIONS + r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    ("gpt2-regex",): "gpt-2",
    ("digits", "gpt2-regex"): "smollm",
    ("split:" + _LLAMA3_SPLIT,): "llama-bpe",
    ("split:" + _QWEN2_SPLIT,): "qwen2",
}


def add_tokenizer(writer: gguf.GGUFWriter, merged_dir: Path, config: dict, eos_token_id: int | None) -> int:
    """Write the tokenizer of `merged_dir` (model, pre-tokenizer, tokens, merges, special tokens); returns the
    vocabulary size. `eos_token_id` replaces the end-of-generation token."""
    tokens, token_types = bpe_vocabulary(merged_dir, config)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(read_json(merged_dir / "tokenizer.json", "the tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    try:
        special = gguf.SpecialVocab(merged_dir, load_merges=True, n_vocab=len(tokens))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ExportError(f"the tokenizer files in {merged_dir} are malformed ({one_line(error)})") from None
    if not special.merges:
        raise ExportError(f"the tokenizer in {merged_dir} has no BPE merges; llama.cpp cannot tokenize without them")
    # llama.cpp adds BOS to BPE vocabularies unless told otherwise; say what the Hugging Face tokenizer does
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    if eos_token_id is not None:
        special.special_token_ids["eos"] = checked_token_id(eos_token_id, len(tokens))
    special.add_to_gguf(writer, quiet=True)
    return len(tokens)


def bpe_vocabulary(merged_dir: Path, config: dict) -> tuple[list[str], list[int]]:
    """Tokens and their llama.cpp types, padded to the embedding's rows as the converter pads them."""
    try:
        vocab = gguf.BpeVocab(merged_dir)
        entries = list(vocab.all_tokens())
        added = read_json(merged_dir / "tokenizer.json", "the tokenizer").get("added_tokens") or []
    except FileNotFoundError:
        raise ExportError(
            f"the tokenizer in {merged_dir} is not byte-level BPE; pass the base model's GGUF as source_gguf"
        ) from None
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise ExportError(f"the tokenizer in {merged_dir} is malformed ({one_line(error)})") from None
    tokens = [text if isinstance(text, str) else text.decode("utf-8") for text, _, _ in entries]
    token_types = [int(token_type) for _, _, token_type in entries]
    # Added tokens trained into the base vocabulary come back NORMAL; llama.cpp must see them as whole tokens.
    for entry in added:
        index = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(index, int) and 0 <= index < len(tokens):
            special = entry.get("special") or _looks_special(tokens[index])
            token_types[index] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    n_vocab = config_field(config, "vocab_size")
    if len(tokens) > n_vocab:
        raise ExportError(f"the tokenizer has {len(tokens)} tokens but the model only {n_vocab} embeddings")
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    token_types += [gguf.TokenType.UNUSED] * (n_vocab - len(token_types))
    return tokens, token_types


def _looks_special(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>")


def pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the way this tokenizer splits text before BPE, read from tokenizer.json.

    llama.cpp's converter tokenizes a probe text and looks the hash up in a table of known models; here the
    pre-tokenizer's own definition is matched against the splits llama.cpp implements. A definition that
    matches none is refused rather than written as "default", which would split text differently.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    shape: list[str] = []
    for step in steps:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "ByteLevel" and not step.get("add_prefix_space"):
            shape += ["gpt2-regex"] if step.get("use_regex", True) else []
        elif kind == "Digits" and step.get("individual_digits"):
            shape.append("digits")
        elif kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
            shape.append("split:" + str((step.get("pattern") or {}).get("Regex")))
        else:
            shape.append(f"unknown {kind}")
    if tuple(shape) not in _PRE_TOKENIZERS:
        raise ExportError(
            "this tokenizer's pre-tokenizer matches none llama.cpp implements here "
            f"({', '.join(sorted(set(_PRE_TOKENIZERS.values())))}); pass the base model's GGUF as source_gguf"
        )
    return _PRE_TOKENIZERS[tuple(shape)]


def checked_token_id(token_id: int, n_vocab: int) -> int:
    """`token_id` as the end-of-generation token, or an ExportError when the vocabulary has no such token."""
    if not 0 <= token_id < n_vocab:
        raise ExportError(f"end-of-generation token id {token_id} is outside the vocabulary of {n_vocab} tokens")
    return token_id


def read_json(path: Path, what: str) -> dict:
    """The JSON object in `path`; `what` names it in the ExportError when it is missing or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{what} is missing: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{what} is not readable JSON: {path} ({one_line(error)})") from None
    if not isinstance(value, dict):
        raise ExportError(f"{what} is not a JSON object: {path}")
    return value


def one_line(error: object) -> str:
    """A library's error message on one line, for an ExportError."""
    return " ".join(str(error).split())


def config_field(config: dict, key: str) -> Any:
    """config.json's `key`, which GGUF needs; an ExportError when it is absent."""
    value = config.get(key)
    if value is None:
        raise ExportError(f"config.json lacks '{key}'; write GGUF from a complete merged model")
    return value
