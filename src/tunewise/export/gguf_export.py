"""Write a merged Hugging Face model folder as one GGUF file that llama.cpp loads.

The `gguf` package does the file format, the tensor names and the quantization; this module applies the
conventions of llama.cpp's own converter (convert_hf_to_gguf.py) on top: Llama's Q/K rows permuted for its
rotary layout, Gemma3's norms stored as 1 + weight, norms and 1-D tensors kept in F32, the output projection
left out when it is the embedding matrix. The metadata comes from the base model's GGUF when there is one
(tokenizer, chat template, pre-tokenizer exactly as llama.cpp wrote them), otherwise from config.json and
the Hugging Face tokenizer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tunewise.errors import ExportError
from tunewise.export.gguf_vocab import add_tokenizer, checked_token_id, config_field, one_line, read_json

SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Gemma3ForCausalLM": "gemma3",
}
# Every type gguf.quants writes in numpy, with llama.cpp's file type for a file mostly in it.
_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32)
} | {
    name: (gguf.GGMLQuantizationType[name.upper()], gguf.LlamaFileType[f"MOSTLY_{name.upper()}"])
    for name in ("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
}
GGUF_TYPES: tuple[str, ...] = tuple(_TYPES)

# Keys that describe the file rather than the model: set afresh for the new file, never copied.
_FILE_KEYS = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
# What describes the source file and not the model: its quantization inputs (imatrix) and its identity.
_SOURCE_FILE_PREFIXES = ("quantize.", "general.uuid")
# Hyperparameters a source GGUF must share with the merged model, as (GGUF key suffix, config.json field).
_SHARED_SHAPE = (
    ("block_count", "num_hidden_layers"),
    ("embedding_length", "hidden_size"),
    ("feed_forward_length", "intermediate_size"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
)


@dataclass(frozen=True)
class GgufSummary:
    """What was written: where, for which llama.cpp architecture, in which tensor type, and from what metadata."""

    path: Path
    architecture: str
    tensor_type: str
    n_tensors: int
    bytes: int
    metadata_from: str  # "source GGUF" or "Hugging Face tokenizer"


def check_gguf_support(merged_config: dict) -> str:
    """The llama.cpp architecture a Hugging Face config maps to; ExportError when it has none here."""
    architectures = merged_config.get("architectures") if isinstance(merged_config, dict) else None
    name = architectures[0] if isinstance(architectures, list) and architectures else None
    if name not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"cannot write GGUF for architecture {name or 'unknown'}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if merged_config.get("quantization_config"):
        raise ExportError("the merged model is quantized; write GGUF from a merged model in full precision")
    return SUPPORTED_ARCHITECTURES[name]


def write_gguf(
    merged_dir: Path,
    out_file: Path,
    *,
    tensor_type: str = "f16",
    source_gguf: Path | None = None,
    eos_token_id: int | None = None,
    name: str | None = None,
) -> GgufSummary:
    """Write `merged_dir` as the single GGUF `out_file`, atomically: on any failure no .gguf is left behind.

    `source_gguf` is the base model's GGUF: its metadata is carried over. `eos_token_id` replaces the
    end-of-generation token (the one that ends an answer in training); `name` sets general.name.
    """
    if tensor_type not in _TYPES:
        raise ExportError(f"unknown GGUF tensor type {tensor_type!r}; choose one of: {', '.join(GGUF_TYPES)}")
    merged_dir, out_file = Path(merged_dir), Path(out_file)
    config = read_json(merged_dir / "config.json", "the merged model's config")
    arch = check_gguf_support(config)
    if arch == "gemma3":
        _check_gemma3_attention(config)
    qtype, file_type = _TYPES[tensor_type]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(partial, arch, use_temp_file=True)  # tensors spool to disk, not RAM
    try:
        if source_gguf is not None:
            n_vocab = _metadata_from_source(writer, Path(source_gguf), arch, config, eos_token_id, name)
        else:
            n_vocab = _metadata_from_hf(writer, merged_dir, arch, config, eos_token_id, name or merged_dir.name)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        n_tensors = _add_tensors(writer, merged_dir, arch, config, qtype, n_vocab)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_file)
    except BaseException as error:
        with suppress(Exception):
            writer.close()
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ExportError(f"could not write {out_file}: {one_line(error.strerror or error)}") from error
        raise
    metadata_from = "source GGUF" if source_gguf is not None else "Hugging Face tokenizer"
    return GgufSummary(out_file, arch, tensor_type, n_tensors, out_file.stat().st_size, metadata_from)


def _metadata_from_source(
    writer: gguf.GGUFWriter, source: Path, arch: str, config: dict, eos_token_id: int | None, name: str | None
) -> int:
    """Copy every model-describing key of the base model's GGUF; returns its vocabulary size."""
    try:
        reader = gguf.GGUFReader(source)
        fields = {key: field for key, field in reader.fields.items() if not key.startswith(("GGUF.", "split."))}
        source_arch = fields["general.architecture"].contents()
        tokens = fields["tokenizer.ggml.tokens"]
    except FileNotFoundError:
        raise ExportError(f"the source GGUF does not exist: {source}") from None
    except Exception as error:  # a hostile or truncated file fails in many ways inside the reader
        raise ExportError(f"the source GGUF is not a readable GGUF model: {source} ({one_line(error)})") from None
    if source_arch != arch:
        raise ExportError(
            f"the source GGUF is a {source_arch} model but the merged model is {arch}; pass the base's GGUF"
        )
    for suffix, config_key in _SHARED_SHAPE:
        stated = fields.get(f"{arch}.{suffix}")
        if stated is not None and config.get(config_key) is not None and stated.contents() != config[config_key]:
            raise ExportError(
                f"the source GGUF has {arch}.{suffix}={stated.contents()} but the merged model has "
                f"{config_key}={config[config_key]}; pass the GGUF of the model that was fine-tuned"
            )
    values = {}
    try:
        for key, field in fields.items():
            if key not in _FILE_KEYS and not key.startswith(_SOURCE_FILE_PREFIXES):
                vtype = field.types[0]
                sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
                values[key] = (field.contents(), vtype, sub_type)
    except (ValueError, IndexError) as error:  # UnicodeDecodeError (a ValueError): a string that is not UTF-8
        raise ExportError(f"the source GGUF has unreadable metadata: {source} ({one_line(error)})") from None
    n_vocab = len(tokens.data)
    if eos_token_id is not None:
        values[gguf.Keys.Tokenizer.EOS_ID] = (checked_token_id(eos_token_id, n_vocab), gguf.GGUFValueType.UINT32, None)
    if name:
        values[gguf.Keys.General.NAME] = (name, gguf.GGUFValueType.STRING, None)
    for key, (value, vtype, sub_type) in values.items():
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    return n_vocab


def _metadata_from_hf(
    writer: gguf.GGUFWriter, merged_dir: Path, arch: str, config: dict, eos_token_id: int | None, name: str
) -> int:
    """Hyperparameters from config.json, vocabulary from the tokenizer; returns the vocabulary size."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _write_hyperparameters(writer, arch, config)
    return add_tokenizer(writer, merged_dir, config, eos_token_id)


def _write_hyperparameters(writer: gguf.GGUFWriter, arch: str, config: dict) -> None:
    """The keys llama.cpp's converter writes for these architectures, from config.json."""
    heads = config_field(config, "num_attention_heads")
    head_dim = config.get("head_dim") or config_field(config, "hidden_size") // heads
    writer.add_block_count(config_field(config, "num_hidden_layers"))
    writer.add_context_length(config_field(config, "max_position_embeddings"))
    writer.add_embedding_length(config_field(config, "hidden_size"))
    writer.add_feed_forward_length(config_field(config, "intermediate_size"))
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config_field(config, "rms_norm_eps"))
    if config.get("head_dim"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    full = rope.get("full_attention", rope)
    writer.add_rope_freq_base(float(full.get("rope_theta") or config.get("rope_theta") or _DEFAULT_ROPE_THETA[arch]))
    if local_theta := rope.get("sliding_attention", {}).get("rope_theta") or config.get("rope_local_base_freq"):
        writer.add_rope_freq_base_swa(float(local_theta))
    rope_type = full.get("rope_type") or full.get("type") or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(config_field(full, "factor")))
    elif rope_type not in ("default", "llama3") or (rope_type == "llama3" and arch != "llama"):
        raise ExportError(f"RoPE scaling '{rope_type}' of this {arch} model cannot be written to GGUF here")
    if arch == "llama":
        writer.add_vocab_size(config_field(config, "vocab_size"))
        writer.add_rope_dimension_count(head_dim)
    if arch == "gemma3":
        if softcap := config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(softcap)
        if config.get("sliding_window_pattern") != 1:
            writer.add_sliding_window(config_field(config, "sliding_window"))


# llama.cpp's converter writes Gemma3's global theta even when config.json leaves it to the class default.
_DEFAULT_ROPE_THETA = {"gemma3": 1_000_000.0, "llama": 10_000.0, "qwen2": 10_000.0}


def _check_gemma3_attention(config: dict) -> None:
    """llama.cpp fixes what config.json states for Gemma3: every 6th layer global, queries scaled by head_dim."""
    blocks, heads, hidden = (
        config_field(config, k) for k in ("num_hidden_layers", "num_attention_heads", "hidden_size")
    )
    head_dim = config.get("head_dim") or hidden // heads
    pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(blocks)]
    if config.get("layer_types", pattern) != pattern:
        raise ExportError("this Gemma3 model's layer_types differ from llama.cpp's fixed 5 local : 1 global pattern")
    scalar = config.get("query_pre_attn_scalar", head_dim)
    if scalar not in (head_dim, hidden // heads):
        raise ExportError(f"this Gemma3 model scales queries by {scalar}, which llama.cpp does not support")


def _add_tensors(
    writer: gguf.GGUFWriter, merged_dir: Path, arch: str, config: dict, qtype: gguf.GGMLQuantizationType, n_vocab: int
) -> int:
    """Every weight under its GGUF name, transformed and typed as llama.cpp's converter does; returns the count."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config_field(config, "num_hidden_layers"))
    heads = config_field(config, "num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads

    def add(hf_name: str, data: np.ndarray) -> None:
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        elif arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp's Gemma3 multiplies by the stored weight; Gemma3RMSNorm by 1 + weight
        elif arch == "gemma3" and hf_name.endswith("embed_tokens.weight"):
            data = data[:n_vocab]  # Gemma3 checkpoints carry rows past the vocabulary
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"weight '{hf_name}' has no GGUF name for {arch}; this model has layers llama.cpp lacks")
        if gguf_name in ("token_embd.weight", "output.weight") and data.shape[0] != n_vocab:
            raise ExportError(f"{hf_name} has {data.shape[0]} rows but the vocabulary has {n_vocab} tokens")
        _add_tensor(writer, gguf_name, data, qtype)

    count, embedding, lm_head = 0, None, None
    for hf_name, data in _weights(merged_dir):
        if hf_name.endswith((".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")):
            continue
        if hf_name == "lm_head.weight":
            lm_head = data  # compared with the embedding once both are read: files need not list it first
            continue
        if hf_name.endswith("embed_tokens.weight"):
            embedding = data
        add(hf_name, data)
        count += 1
    if embedding is None:
        raise ExportError(f"the merged model in {merged_dir} has no token embedding (model.embed_tokens.weight)")
    if lm_head is not None and not np.array_equal(lm_head, embedding):  # equal: llama.cpp reuses token_embd
        add("lm_head.weight", lm_head)
        count += 1
    if arch == "llama" and _rope_type(config) == "llama3":
        _add_tensor(writer, "rope_freqs.weight", _llama3_rope_factors(config), qtype)
        count += 1
    return count


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> None:
    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = gguf.GGMLQuantizationType.F32  # llama.cpp computes norms, biases and 1-D tensors in F32 only
    try:
        packed = gguf.quants.quantize(data, qtype)
    except gguf.QuantError:  # rows that do not fill whole blocks: F16, as llama.cpp's converter falls back
        qtype = gguf.GGMLQuantizationType.F16
        packed = gguf.quants.quantize(data, qtype)
    writer.add_tensor(name, packed, raw_dtype=qtype)  # the writer derives the shape from quantized bytes


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's half-split rotary layout to llama.cpp's interleaved one, head by head."""
    rows = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, 2, rows, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _rope_type(config: dict) -> str:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return str(rope.get("rope_type") or rope.get("type") or "default").lower()


def _llama3_rope_factors(config: dict) -> np.ndarray:
    """Llama 3's per-frequency RoPE divisors, which llama.cpp reads from rope_freqs.weight."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = rope.get("rope_theta") or config.get("rope_theta") or 10_000.0
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    between = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelen < old_context / high, 1.0, np.where(wavelen > old_context / low, factor, between))
    return factors.astype(np.float32)


def _weights(merged_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor of the merged safetensors as float32, one at a time (bf16 has no numpy type, so via torch)."""
    from safetensors import SafetensorError, safe_open

    index = merged_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "the safetensors index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ExportError(f"the safetensors index has no weight_map: {index}")
        names = {str(part) for part in weight_map.values()}
        if any(Path(name).name != name or not name.endswith(".safetensors") for name in names):
            raise ExportError(f"the safetensors index names files outside {merged_dir}: {index}")
        parts = sorted(merged_dir / name for name in names)
    else:
        parts = sorted(merged_dir.glob("*.safetensors"))
    if not parts:
        raise ExportError(f"no safetensors weights in {merged_dir}; merge the model before writing GGUF")
    for part in parts:
        try:
            with safe_open(str(part), framework="pt") as tensors:
                for key in tensors.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                    yield key, tensors.get_tensor(key).float().numpy()
        except (SafetensorError, OSError) as error:
            raise ExportError(f"cannot read weights {part}: {one_line(error)}") from None
