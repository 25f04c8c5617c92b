"""The tokenizer metadata of a GGUF written from a Hugging Face tokenizer, checked through transformers' own GGUF
reader: the tokenizer it rebuilds must encode text as the original does, special tokens included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
from transformers import AutoTokenizer

from support.tiny import CHATML
from tunewise.errors import ExportError
from tunewise.export.gguf_export import write_gguf
from tunewise.export.gguf_vocab import bpe_vocabulary, checked_token_id, pre_tokenizer

PROMPTS = [
    "the car ride was great today",
    "<|im_start|>user\nClassify the text: my trip was awful<|im_end|>\n<|im_start|>assistant\n",
]


def fields(path: Path) -> dict:
    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "merged"))


def test_the_tokenizer_read_back_encodes_alike(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = write_gguf(tiny_model_dir, tmp_path / "tiny-f16.gguf", tensor_type="f16").path
    read_back = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    original = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in [*PROMPTS, "<|im_end|><|endoftext|> plain  text 123 café!", "  leading spaces\n\nand lines"]:
        assert read_back(text).input_ids == original(text).input_ids, text
    assert read_back.chat_template == CHATML
    meta = fields(path)
    # llama.cpp matches a token whole in text only when its type is CONTROL or USER_DEFINED
    special_types = {meta["tokenizer.ggml.token_type"][i] for i in original.all_special_ids}
    assert special_types == {gguf.TokenType.CONTROL}
    assert meta["tokenizer.ggml.add_bos_token"] is False  # the Hugging Face tokenizer adds none
    assert meta["tokenizer.ggml.pre"] == "gpt-2"  # ByteLevel with GPT-2's regex, as in tiny.py
    assert meta["tokenizer.ggml.eos_token_id"] == original.eos_token_id
    assert meta["tokenizer.ggml.bos_token_id"] == original.bos_token_id


@pytest.mark.parametrize("name", ["llama-bpe", "qwen2", "smollm"])
def test_known_pre_tokenizers_are_recognised(name: str, model_copy: Path, tmp_path: Path) -> None:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": name == "smollm"}
    first = (
        {"type": "Digits", "individual_digits": True}
        if name == "smollm"
        else {"type": "Split", "pattern": {"Regex": GGUF_PRE_TOKENIZER_SPLITS[name]}, "behavior": "Isolated"}
    )
    edit_json(model_copy / "tokenizer.json", pre_tokenizer={"type": "Sequence", "pretokenizers": [first, byte_level]})
    assert fields(write_gguf(model_copy, tmp_path / "out.gguf").path)["tokenizer.ggml.pre"] == name


def _unknown_pre_tokenizer(merged: Path) -> None:
    edit_json(merged / "tokenizer.json", pre_tokenizer={"type": "Whitespace"})


def _not_byte_level(merged: Path) -> None:
    tokenizer = json.loads((merged / "tokenizer.json").read_text())
    tokenizer["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    (merged / "tokenizer.json").write_text(json.dumps(tokenizer))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_unknown_pre_tokenizer, "pre-tokenizer matches none"),
        (_not_byte_level, "not byte-level BPE"),
    ],
)
def test_tokenizers_llama_cpp_cannot_read_are_one_line_export_errors(
    breakage, message: str, model_copy: Path, tmp_path: Path
) -> None:
    breakage(model_copy)
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(ExportError, match=message) as error:
        write_gguf(model_copy, out)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_vocabulary_and_pre_tokenizer_straight_from_the_tokenizer_files(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokens, types = bpe_vocabulary(tiny_model_dir, config)
    assert len(tokens) == len(types) == config["vocab_size"]
    specials = {tokens.index(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
    assert {types[i] for i in specials} == {gguf.TokenType.CONTROL}
    assert pre_tokenizer(json.loads((tiny_model_dir / "tokenizer.json").read_text())) == "gpt-2"
    with pytest.raises(ExportError, match="token id 999999"):
        checked_token_id(999_999, config["vocab_size"])
