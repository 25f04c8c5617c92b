"""docs/configuration.md is generated from the config models, and every key in them is described there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from tunewise.config import Config
from tunewise.config.docs import main, render_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _models(model: type[BaseModel], path: str, found: dict[type[BaseModel], str]) -> dict[type[BaseModel], str]:
    """Every model reachable from `model` through its fields' annotations (X | None, list[...], dict[..., X],
    Annotated unions), with the dotted path of its first appearance; list items and map values get `[]`/`<key>`."""
    found.setdefault(model, path)
    for name, field in model.model_fields.items():
        for nested, suffix in _inner(field.annotation):
            if nested not in found:
                _models(nested, f"{path}.{name}{suffix}".lstrip("."), found)
    return found


def _inner(annotation: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and not get_args(annotation) and issubclass(annotation, BaseModel):
        return [(annotation, suffix)]
    origin = getattr(annotation, "__origin__", None)
    mark = {list: "[]", dict: ".<key>"}.get(origin, "")
    args = get_args(annotation)[1:] if origin is dict else get_args(annotation)
    return [item for arg in args for item in _inner(arg, suffix + mark)]


MODELS = _models(Config, "", {})


def test_the_reference_is_the_generated_one():
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is out of date with the config models: run `make config-docs`"
    )


def test_the_walk_reaches_every_kind_of_section():
    assert {"model", "train", "curate", "sweep.params.<key>", "ablate"} <= set(MODELS.values())
    steps = [path for path in MODELS.values() if path == "curate.steps[]"]
    assert len(steps) == 13  # one model per curation step type


@pytest.mark.parametrize("model", list(MODELS), ids=lambda model: model.__name__)
def test_every_field_has_a_description(model: type[BaseModel]):
    path = MODELS[model]
    missing = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"{model.__name__} ({path or 'top level'}): describe {missing} with Field(description=...)"


def test_the_reference_names_every_key_in_its_section():
    text = render_reference()
    sections = dict(re.findall(r"^#+ ([^\n]+)\n(.*?)(?=^#+ |\Z)", text, flags=re.MULTILINE | re.DOTALL))
    for model, path in MODELS.items():
        if path == "curate.steps[]":
            tag = get_args(model.model_fields["step"].annotation)[0]
            body, prefix = sections[f"`curate.steps` item `{tag}`"], ""
        elif path.endswith(".<key>"):
            body, prefix = sections[f"`{path}`"], ""
        else:
            body, prefix = sections[f"`{path}`" if path else "Sections"], f"{path}." if path else ""
        for name in model.model_fields:
            assert f"| `{prefix}{name}` |" in body, f"{prefix}{name} is not in the reference"


def test_types_defaults_and_descriptions_read_as_written():
    text = render_reference()
    rows = {
        "`train.batch_size` | int > 0 | `8` |",
        "`data.val_fraction` | float in (0, 1) | `0.1` |",
        "`lora.dropout` | float in [0, 1) | `0.1` |",
        "`train.sampler` | one of `random \\| stratified \\| length_grouped` | `random` | order of training",
        "`data.train` | path | required |",
        "`data.labels` | list[str] | *unset* |",
        "`lora.target_modules` | list[str] or `all-linear` | `all-linear` |",
        "`ablate.fractions` | list[float] | `[0.1, 0.25, 0.5, 1.0]` |",
        "`eval.calibrate` | bool | `false` | classification with label_mode likelihood",
        "`threshold` | float in (0, 1] | `0.8` | estimated Jaccard similarity |",
        "`low` | number | *unset* |",
    }
    assert not [row for row in rows if row not in text]


def test_the_module_writes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "configuration.md"
    main(["--write", str(target)])
    assert target.read_text(encoding="utf-8") == render_reference()
    main([])
    assert capsys.readouterr().out == render_reference()
