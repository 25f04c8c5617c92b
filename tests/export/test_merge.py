"""merge.py: the token ids that end an answer, the merged directory as written, the adapter's recorded base, and a
quantized run's adapter merged into the full-precision base."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import PeftModel
from rich.console import Console
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.features import make_features
from support.tiny import build_tiny_model, make_classification_rows
from tunewise.config import Config, PromptSettings
from tunewise.data.encode import Encoded
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.errors import ExportError
from tunewise.export.merge import AdaptedModel, _check_adapter_base, load_adapted, merge_and_save, stop_token_ids
from tunewise.export.run_source import evaluated_data, read_run_source
from tunewise.models import load_model
from tunewise.models.loader import ModelSource

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _renderer(tokenizer: Any, **settings: Any) -> PromptRenderer:
    return PromptRenderer(PromptSettings(**settings), "classification", tokenizer, LABELS)


def test_a_chatml_answer_ends_at_im_end(tokenizer: Any):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end  # the tiny model's EOS is its end-of-turn
    assert stop_token_ids(_renderer(tokenizer), tokenizer) == [im_end]


def test_an_eos_other_than_the_end_of_turn_comes_second(tokenizer: Any):
    tokenizer.eos_token = "<|endoftext|>"
    stops = stop_token_ids(_renderer(tokenizer), tokenizer)
    assert stops == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def test_without_the_chat_template_an_answer_ends_at_eos(tokenizer: Any):
    tokenizer.eos_token = "<|endoftext|>"  # so EOS is not also the chat template's end-of-turn
    renderer = _renderer(tokenizer, chat_template=False)
    assert stop_token_ids(renderer, tokenizer) == [tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def test_an_end_marker_of_several_tokens_cannot_stop_generation(tokenizer: Any):
    # A chat template whose end-of-turn is plain text, not one special token.
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    renderer = _renderer(tokenizer)
    assert renderer.end_of_answer.strip() == "</turn>"
    with pytest.raises(ExportError, match=r"'</turn>', which is \d+ tokens, not one"):
        stop_token_ids(renderer, tokenizer)


def test_nothing_that_ends_an_answer_is_an_error():
    renderer = SimpleNamespace(end_of_answer="")
    no_eos = SimpleNamespace(eos_token_id=None)
    with pytest.raises(ExportError, match="nothing ends an answer"):
        stop_token_ids(renderer, no_eos)  # type: ignore[arg-type]


@pytest.fixture
def adapted(finished_run: Path) -> AdaptedModel:
    source = read_run_source(finished_run)
    data = evaluated_data(source, Console(quiet=True))
    return load_adapted(source.config, source.adapter_dir, source.adapter_settings, data.splits)


def test_merge_and_save_writes_plain_weights_and_greedy_generation(adapted: AdaptedModel, tmp_path: Path):
    save_tokenizer = adapted.tokenizer.save_pretrained

    def with_code(directory: Any, **kwargs: Any) -> Any:
        # A tokenizer of a remote-code model saves its Python beside itself: an export must not ship it.
        saved = save_tokenizer(directory, **kwargs)
        (Path(directory) / "tokenization_custom.py").write_text("import os\n")
        (Path(directory) / "__pycache__").mkdir()
        (Path(directory) / "__pycache__" / "tokenization_custom.cpython-312.pyc").write_bytes(b"\0")
        return saved

    adapted.tokenizer.save_pretrained = with_code
    stops = stop_token_ids(adapted.renderer, adapted.tokenizer)
    directory = tmp_path / "merged"
    generation = merge_and_save(adapted, directory)

    assert not [p for p in directory.rglob("*") if p.suffix in {".py", ".pyc"}]
    assert (directory / "tokenizer_config.json").is_file()
    saved = json.loads((directory / "generation_config.json").read_text())
    assert saved["do_sample"] is False and generation["do_sample"] is False
    assert saved["eos_token_id"] == (stops if len(stops) > 1 else stops[0])
    assert not {"temperature", "top_p", "top_k"} & set(saved)  # nothing that suggests sampling
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config
    with safe_open(str(directory / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert weights.get_tensor(names[0]).dtype == torch.float32
    assert not [n for n in names if "lora" in n]  # folded in, no adapter tensors left
    assert not hasattr(adapted.model, "peft_config")  # the merged model replaces the adapted one


def test_merge_and_save_in_bfloat16(adapted: AdaptedModel, tmp_path: Path):
    merge_and_save(adapted, tmp_path / "merged", dtype="bfloat16")
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(n).dtype for n in weights.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_the_adapted_model_is_the_runs_base_with_its_adapter(adapted: AdaptedModel, tiny_model_dir: Path):
    assert adapted.base_name == str(tiny_model_dir)
    assert adapted.source_gguf is None  # a folder, not a GGUF
    assert next(adapted.model.parameters()).dtype == torch.float32
    assert not adapted.model.training


def test_the_source_gguf_is_the_file_inside_its_folder():
    adapted = AdaptedModel(None, None, None, ModelSource("gguf", "/models/qwen", "qwen.Q8_0.gguf"), "qwen")  # type: ignore[arg-type]
    assert adapted.source_gguf == Path("/models/qwen/qwen.Q8_0.gguf")


def _model(name_or_path: str | None) -> Any:
    return SimpleNamespace(name_or_path=name_or_path, config=SimpleNamespace(_name_or_path=name_or_path))


def test_an_adapter_on_the_same_base_name_is_accepted(tmp_path: Path):
    # The base is compared by its folder's name: the run may have been moved to another machine.
    settings = {"base_model_name_or_path": "/home/a/models/tiny-llama"}
    _check_adapter_base(settings, _model("/mnt/b/tiny-llama"), "tiny-llama", tmp_path)
    _check_adapter_base({}, _model("/mnt/b/tiny-llama"), "tiny-llama", tmp_path)  # no record: nothing to compare
    _check_adapter_base(settings, _model(None), "tiny-llama", tmp_path)


def test_an_adapter_on_another_base_is_refused(tmp_path: Path):
    settings = {"base_model_name_or_path": "/models/tiny-llama"}
    with pytest.raises(ExportError, match="trained on tiny-llama, but model.name other now loads other-llama"):
        _check_adapter_base(settings, _model("/models/other-llama"), "other", tmp_path)


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, DataSplits]:
    """An adapter trained for a few steps on the 4-bit (NF4) tiny base: the config, the adapter, the splits."""
    pytest.importorskip("bitsandbytes")
    from tunewise.train.trainer import train  # the Trainer stack only for this fixture

    root = tmp_path_factory.mktemp("qlora-export")
    model_dir = build_tiny_model(root / "tiny-64", hidden_size=64)
    config = Config(
        model={"name": str(model_dir), "quantize": "4bit", "device": "cpu"},
        data={"train": str(root / "unused.jsonl"), "kind": "classification"},
        train={"lr": 2e-2, "batch_size": 4, "max_steps": 3, "eval_steps": 3, "patience": 0},
    )
    loaded = load_model(config.model)
    items = [Encoded(f["input_ids"], f["labels"], False) for f in make_features(12, loaded.tokenizer.vocab_size)]
    result = train(loaded.model, loaded.tokenizer, config, items[:8], items[8:], root / "run", Console(quiet=True))
    rows = make_classification_rows(9, seed=2)
    records = [Record("classification", row, "mem.jsonl", i + 1) for i, row in enumerate(rows)]
    return config, result.adapter_dir, DataSplits(records[:3], records[3:6], records[6:], LABELS, [])


def test_a_quantized_runs_adapter_merges_into_the_full_precision_base(
    qlora_run: tuple[Config, Path, DataSplits], tmp_path: Path
) -> None:
    """model.quantize: 4bit trains on NF4 weights; the export reloads the base unquantized in float32 and merges
    there: the merged model is exactly the full-precision base with the adapter, nothing rounded to 4 bits."""
    config, adapter_dir, splits = qlora_run
    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    adapted = load_adapted(config, adapter_dir, settings, splits)
    quantized = [n for n, m in adapted.model.named_modules() if type(m).__module__.startswith("bitsandbytes")]
    assert not quantized and {p.dtype for p in adapted.model.parameters()} == {torch.float32}

    base = AutoModelForCausalLM.from_pretrained(config.model.name, dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = torch.tensor([adapted.tokenizer("the film was great and the food was fine")["input_ids"]])
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        base_only = reference.get_base_model()
        with reference.disable_adapter():
            without_adapter = base_only(input_ids=ids).logits
    assert (expected - without_adapter).abs().max() > 1e-3  # the adapter was trained: it changes the logits

    merge_and_save(adapted, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
