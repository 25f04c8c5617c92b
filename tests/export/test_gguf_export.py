"""GGUF export, checked through readers that share no code with the writer: transformers loads each file
(dequantizing, undoing llama.cpp's Q/K permutation and Gemma3's norm offset) and must reproduce the logits of
the Hugging Face model it came from. The tokenizer metadata is checked in test_gguf_vocab.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunewise.errors import ExportError
from tunewise.export import gguf_export
from tunewise.export.fidelity import logit_fidelity
from tunewise.export.gguf_export import GGUF_TYPES, SUPPORTED_ARCHITECTURES, check_gguf_support, write_gguf

PROMPTS = [
    "the car ride was great today",
    "<|im_start|>user\nClassify the text: my trip was awful<|im_end|>\n<|im_start|>assistant\n",
]
# Whole-file weight error Σ(ŵ−w)²/Σw² each type may reach; a misread layout lands near 1 or above.
WEIGHT_NMSE = {
    "f32": 0.0,
    "f16": 1e-6,
    "bf16": 1e-4,
    "q8_0": 1e-4,
    "q5_1": 5e-3,
    "q5_0": 5e-3,
    "q4_1": 2e-2,
    "q4_0": 2e-2,
}
LOGIT_NMSE = {"f16": 1e-4, "bf16": 1e-3, "q8_0": 1e-2}


def load_gguf(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def logits(model: torch.nn.Module, ids: list[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        return [model(i).logits[0].numpy() for i in ids]


def fields(path: Path) -> dict:
    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]
    return {"model": model, "ids": ids, "logits": logits(model, ids)}


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {t: write_gguf(tiny_model_dir, folder / f"tiny-{t}.gguf", tensor_type=t).path for t in GGUF_TYPES}


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "merged"))


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_f32_reproduces_the_logits(exported: dict[str, Path], reference: dict) -> None:
    fidelity = logit_fidelity(reference["logits"], logits(load_gguf(exported["f32"]), reference["ids"]))
    assert fidelity.max_abs_diff < 1e-4


def test_without_the_rotary_permutation_the_logits_differ(
    tiny_model_dir: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_export, "_permute", lambda weights, n_head: weights)
    path = write_gguf(tiny_model_dir, tmp_path / "unpermuted.gguf", tensor_type="f32").path
    assert logit_fidelity(reference["logits"], logits(load_gguf(path), reference["ids"])).max_abs_diff > 1e-2


@pytest.mark.parametrize("tensor_type", sorted(LOGIT_NMSE))
def test_reduced_precision_keeps_the_logits_close(tensor_type: str, exported: dict[str, Path], reference: dict) -> None:
    fidelity = logit_fidelity(reference["logits"], logits(load_gguf(exported[tensor_type]), reference["ids"]))
    assert fidelity.nmse < LOGIT_NMSE[tensor_type]


@pytest.mark.parametrize("tensor_type", GGUF_TYPES)
def test_every_type_decodes_to_the_original_weights(
    tensor_type: str, exported: dict[str, Path], reference: dict
) -> None:
    original = reference["model"].state_dict()
    decoded = load_gguf(exported[tensor_type]).state_dict()
    error = sum(float(((decoded[k] - original[k]) ** 2).sum()) for k in original)
    assert error <= WEIGHT_NMSE[tensor_type] * sum(float((v**2).sum()) for v in original.values())
    expected = gguf_export._TYPES[tensor_type][0]
    for tensor in gguf.GGUFReader(exported[tensor_type]).tensors:
        one_d_or_norm = len(tensor.shape) == 1 or tensor.name.endswith("_norm.weight")
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if one_d_or_norm else expected), tensor.name
    assert fields(exported[tensor_type])["general.file_type"] == gguf_export._TYPES[tensor_type][1]


@pytest.mark.parametrize("tensor_type", ["q8_0", "q4_0", "q4_1"])
def test_an_independent_decoder_reads_the_quantized_blocks_alike(tensor_type: str, exported: dict[str, Path]) -> None:
    from transformers.integrations.gguf.dequant import dequantize as torch_dequantize

    for tensor in gguf.GGUFReader(exported[tensor_type]).tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            theirs = torch_dequantize(torch.from_numpy(np.array(tensor.data)).reshape(-1), int(tensor.tensor_type))
            ours = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            np.testing.assert_array_equal(theirs.numpy(), ours)


def test_hyperparameters_come_from_config(exported: dict[str, Path], tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    meta = fields(exported["f32"])
    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == tiny_model_dir.name
    for key, config_key in [
        ("context_length", "max_position_embeddings"),
        ("embedding_length", "hidden_size"),
        ("block_count", "num_hidden_layers"),
        ("feed_forward_length", "intermediate_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("vocab_size", "vocab_size"),
    ]:
        assert meta[f"llama.{key}"] == config[config_key], key
    assert meta["llama.rope.dimension_count"] == config["hidden_size"] // config["num_attention_heads"]
    assert meta["llama.rope.freq_base"] == config["rope_parameters"]["rope_theta"]
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    # tied embeddings: llama.cpp reuses token_embd, so there is no output.weight
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(exported["f32"]).tensors}


def test_an_lm_head_equal_to_the_embedding_is_left_out(model_copy: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(model_copy / "model.safetensors")
    save_file(
        {**weights, "lm_head.weight": weights["model.embed_tokens.weight"].clone()}, model_copy / "model.safetensors"
    )
    path = write_gguf(model_copy, tmp_path / "out.gguf").path
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}


def test_eos_override_and_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    summary = write_gguf(tiny_model_dir, tmp_path / "out.gguf", eos_token_id=0, name="tuned")
    meta = fields(summary.path)
    assert (meta["tokenizer.ggml.eos_token_id"], meta["general.name"]) == (0, "tuned")
    assert summary.metadata_from == "Hugging Face tokenizer"
    assert summary.bytes == summary.path.stat().st_size
    with pytest.raises(ExportError, match="outside the vocabulary"):
        write_gguf(tiny_model_dir, tmp_path / "bad.gguf", eos_token_id=10**6)
    assert not (tmp_path / "bad.gguf").exists()


def test_source_gguf_metadata_is_carried(exported: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    source = exported["f32"]
    summary = write_gguf(tiny_model_dir, tmp_path / "out.gguf", tensor_type="q8_0", source_gguf=source, eos_token_id=0)
    assert summary.metadata_from == "source GGUF"
    before, after = fields(source), fields(summary.path)
    describing_the_file = {"general.file_type", "general.quantization_version", "tokenizer.ggml.eos_token_id"}
    for key, value in before.items():
        if not key.startswith("GGUF.") and key not in describing_the_file:
            assert after[key] == value, key
    assert after["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert after["general.quantization_version"] == gguf.GGML_QUANT_VERSION
    assert after["tokenizer.ggml.eos_token_id"] == 0


def test_a_source_gguf_of_another_model_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    qwen = build_tiny(tiny_model_dir, tmp_path / "qwen2", "qwen2")
    other_arch = write_gguf(qwen, tmp_path / "qwen2.gguf", tensor_type="f16").path
    with pytest.raises(ExportError, match="qwen2 model but the merged model is llama"):
        write_gguf(tiny_model_dir, tmp_path / "out.gguf", source_gguf=other_arch)
    other_shape = tmp_path / "deeper.gguf"
    writer = gguf.GGUFWriter(other_shape, "llama")
    writer.add_block_count(99)
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ExportError, match="block_count=99"):
        write_gguf(tiny_model_dir, tmp_path / "out.gguf", source_gguf=other_shape)
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(ExportError, match="not a readable GGUF"):
        write_gguf(tiny_model_dir, tmp_path / "out.gguf", source_gguf=not_gguf)
    assert not (tmp_path / "out.gguf").exists()


def build_tiny(tokenizer_dir: Path, directory: Path, kind: str, hidden: int = 64) -> Path:
    """A tiny random Qwen2 (untied, with q/k/v biases) or Gemma3 (6 layers: 5 local, 1 global) on tiny.py's
    tokenizer; the norms are randomised so that a missing Gemma3 offset shows."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "initializer_range": 0.3,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(0)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=2, tie_word_embeddings=False, **common))
    else:  # llama.cpp scales Gemma3 queries by head_dim; transformers reads back its default of 256
        config = Gemma3TextConfig(
            num_hidden_layers=6, head_dim=256, query_pre_attn_scalar=256, sliding_window=8, **common
        )
        model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("norm.weight", "_proj.bias")):
                parameter.normal_(0, 0.3)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("kind", ["qwen2", "gemma3"])
def test_other_architectures_reproduce_the_logits(kind: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    merged = build_tiny(tiny_model_dir, tmp_path / kind, kind)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]  # the second outruns Gemma3's window of 8
    summary = write_gguf(merged, tmp_path / f"{kind}.gguf", tensor_type="f32")
    assert summary.architecture == kind
    fidelity = logit_fidelity(logits(model, ids), logits(load_gguf(summary.path), ids))
    assert fidelity.max_abs_diff < 1e-4
    names = {t.name for t in gguf.GGUFReader(summary.path).tensors}
    assert ("output.weight" in names) == (kind == "qwen2")  # Qwen2 here is untied, Gemma3 always tied


def test_rows_that_fill_no_whole_block_fall_back_to_f16(tiny_model_dir: Path, tmp_path: Path) -> None:
    merged = build_tiny(tiny_model_dir, tmp_path / "qwen2", "qwen2", hidden=48)  # 48 is no multiple of 32
    path = write_gguf(merged, tmp_path / "mixed.gguf", tensor_type="q8_0").path
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 96
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]
    original = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert logit_fidelity(logits(original, ids), logits(load_gguf(path), ids)).nmse < 1e-2


def test_llama3_rope_scaling_is_written_as_rope_freqs(model_copy: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0}
    rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    edit_json(model_copy / "config.json", rope_parameters=rope)
    path = write_gguf(model_copy, tmp_path / "out.gguf", tensor_type="q8_0").path
    written = {t.name: t for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"]
    config = LlamaConfig.from_pretrained(model_copy)
    expected = (
        LlamaRotaryEmbedding.compute_default_rope_parameters(config)[0] / ROPE_INIT_FUNCTIONS["llama3"](config)[0]
    )
    assert written.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_allclose(np.array(written.data), expected.numpy(), rtol=1e-5)


def test_check_gguf_support_names_the_supported_architectures() -> None:
    assert check_gguf_support({"architectures": ["LlamaForCausalLM"]}) == "llama"
    with pytest.raises(ExportError) as error:
        check_gguf_support({"architectures": ["GPT2LMHeadModel"]})
    assert str(error.value).startswith("cannot write GGUF for architecture GPT2LMHeadModel; supported: ")
    assert all(name in str(error.value) for name in SUPPORTED_ARCHITECTURES)


def _break_config_json(merged: Path) -> None:
    (merged / "config.json").write_text("{not json")


def _drop_a_config_field(merged: Path) -> None:
    config = json.loads((merged / "config.json").read_text())
    del config["num_attention_heads"]
    (merged / "config.json").write_text(json.dumps(config))


def _quantized_config(merged: Path) -> None:
    edit_json(merged / "config.json", quantization_config={"quant_method": "bitsandbytes"})


def _unsupported_architecture(merged: Path) -> None:
    edit_json(merged / "config.json", architectures=["MambaForCausalLM"])


def _remove_weights(merged: Path) -> None:
    (merged / "model.safetensors").unlink()


def _corrupt_weights(merged: Path) -> None:
    (merged / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_break_config_json, "not readable JSON"),
        (_drop_a_config_field, "lacks 'num_attention_heads'"),
        (_quantized_config, "quantized"),
        (_unsupported_architecture, "cannot write GGUF for architecture MambaForCausalLM"),
        (_remove_weights, "no safetensors weights"),
        (_corrupt_weights, "cannot read weights"),
    ],
)
def test_bad_inputs_are_one_line_export_errors(breakage, message: str, model_copy: Path, tmp_path: Path) -> None:
    breakage(model_copy)
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(ExportError, match=message) as error:
        write_gguf(model_copy, out)
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_an_unknown_tensor_type_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="q4_k"):
        write_gguf(tiny_model_dir, tmp_path / "out.gguf", tensor_type="q4_k")


def test_a_failed_write_leaves_no_partial_file(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.gguf"
    out.write_bytes(b"the previous export")

    def fail(self: gguf.GGUFWriter, **_: object) -> None:
        raise RuntimeError("disk went away")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail)
    with pytest.raises(RuntimeError, match="disk went away"):
        write_gguf(tiny_model_dir, out)
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
    assert out.read_bytes() == b"the previous export"
