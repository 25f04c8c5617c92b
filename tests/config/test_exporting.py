"""The `export` section: formats, precision and GGUF type, validated like every section."""

from __future__ import annotations

import pytest

from tunewise.config import config_from_mapping
from tunewise.config.exporting import ExportConfig
from tunewise.errors import ConfigError


def test_defaults_export_merged_and_gguf_in_full_precision() -> None:
    settings = ExportConfig()
    assert settings.formats == ["merged", "gguf"] and settings.dtype == "float32" and settings.gguf_type == "f16"


def test_repeated_formats_collapse_and_an_empty_list_is_an_error() -> None:
    assert ExportConfig(formats=["gguf", "merged", "gguf"]).formats == ["gguf", "merged"]
    with pytest.raises(ValueError, match="at least one format"):
        ExportConfig(formats=[])


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"formats": ["onnx"]}, "export.formats"),
        ({"gguf_type": "q2_k"}, "export.gguf_type"),
        ({"dtype": "int8"}, "export.dtype"),
        ({"quant": "q8_0"}, "quant"),  # an unknown key, as in every section
    ],
)
def test_bad_export_sections_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"data": {"train": "train.jsonl"}, "export": section})


def test_a_config_without_export_section_exports_nothing_at_the_end_of_a_run() -> None:
    assert config_from_mapping({"data": {"train": "train.jsonl"}}).export is None
