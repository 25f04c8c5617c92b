"""The option reference, docs/configuration.md, rendered from the config models: every key with its type,
default and description, so the reference cannot drift from what tunewise accepts.

    python -m tunewise.config.docs                                # print it
    python -m tunewise.config.docs --write docs/configuration.md  # what `make config-docs` runs
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tunewise.config import Config
from tunewise.config.error_messages import is_section, members_of

INTRO = """\
# Configuration reference

<!-- Generated from src/tunewise/config/ by `make config-docs`:
edit the descriptions there, not this file. -->

A config is a YAML file of the sections below; only `data.train` is required. A key tunewise does not
know is an error that names it (and the key you probably meant), and so is a value of the wrong type or
out of range.

Any key can also be set on the command line, after the config file, as a dotted `KEY=VALUE` whose value
is read as YAML:

```bash
tunewise run config.yaml train.lr=1e-4 lora.r=8 'data.labels=[negative, positive]'
```

An invalid value is reported with where it came from: the config file, or the override.

In the tables, a type such as `int > 0` or `float in (0, 1]` gives the allowed range, and `one of` the
allowed values; a `path` is a file or folder (in `data`, `curate.output` and `ablate.raw` a relative
path is read against the config file's folder). A default of *unset* means the key is absent or `null`.
"""


@dataclass(frozen=True)
class Table:
    """One model's keys under one heading. `prefix` is written before each key: the section's dotted path, or
    nothing for the items of a list or the values of a map, whose keys are their own."""

    heading: str
    level: int
    model: type[BaseModel]
    prefix: str
    intro: str = ""  # after the model's docstring
    preamble: str = ""  # before the heading: what a group of tables shares


def render_reference() -> str:
    """docs/configuration.md: the intro, then a table of keys per section, curation step and sweep parameter."""
    parts = [INTRO]
    for table in tables():
        if table.preamble:
            parts.append(f"{table.preamble.rstrip()}\n")
        parts.append(f"{'#' * table.level} {table.heading}\n")
        doc = inspect.cleandoc(table.model.__dict__.get("__doc__") or "")
        parts += [f"{text}\n" for text in (doc, table.intro) if text]
        parts.append(_table(table))
    return "\n".join(parts)


def tables() -> list[Table]:
    """Every table of the reference in reading order: the sections, each followed by those nested in it."""
    found = [Table("Sections", 2, Config, "")]
    for name, field in Config.model_fields.items():
        found += _nested(name, field.annotation, level=2)
    return found


def _nested(path: str, annotation: Any, level: int) -> list[Table]:
    """The tables of the model(s) an annotation holds: a section, a list of mappings (one table per type of a
    tagged union), or the values of a map; none for plain values."""
    kinds = members_of(annotation)
    models = [k for k in kinds if is_section(k)]
    if len(models) == 1:
        found = [Table(f"`{path}`", level, models[0], f"{path}.")]
        for name, field in models[0].model_fields.items():
            found += _nested(f"{path}.{name}", field.annotation, level + 1)
        return found
    container = next((k for k in kinds if get_origin(k) in (list, dict)), None)
    if container is None:
        return []
    items = [k for k in members_of(get_args(container)[-1]) if is_section(k)]
    if not items:  # a list or map of plain values
        return []
    if get_origin(container) is dict:
        return [Table(f"`{path}.<key>`", level, model, "", f"Each value of `{path}`.") for model in items]
    if len(items) == 1:
        return [Table(f"`{path}` items", level, items[0], "", f"Each item of `{path}`.")]
    return _tagged(path, annotation, items, level)


def _tagged(path: str, annotation: Any, items: list[type[BaseModel]], level: int) -> list[Table]:
    """A list whose items are told apart by one key (pydantic's discriminator): one table per type."""
    key = next(meta.discriminator for meta in _annotated_meta(annotation) if getattr(meta, "discriminator", None))
    *sections, name = path.split(".")
    example = "".join(f"{'  ' * depth}{section}:\n" for depth, section in enumerate([*sections, name]))
    indent = "  " * len(sections) + "  "
    example += f"{indent}- {key}: {_tag(items[0], key)}\n{indent}- {key}: {_tag(items[-1], key)}\n"
    example += f"{indent}  enabled: false\n"
    preamble = f"Each item of `{path}` is a mapping whose `{key}` key names its type; the keys of each type follow.\n"
    preamble += f"\n```yaml\n{example}```\n"
    return [
        Table(f"`{path}` item `{_tag(model, key)}`", level, model, "", preamble=preamble if i == 0 else "")
        for i, model in enumerate(items)
    ]


def _annotated_meta(annotation: Any) -> Iterator[Any]:
    """The metadata of the `Annotated[...]` inside an annotation (e.g. `list[Annotated[A | B, Field(...)]]`)."""
    for arg in get_args(annotation):
        yield from getattr(arg, "__metadata__", ())
        yield from _annotated_meta(arg)


def _tag(model: type[BaseModel], key: str) -> str:
    return str(get_args(model.model_fields[key].annotation)[0])


def _table(table: Table) -> str:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in table.model.model_fields.items():
        cells = (f"`{table.prefix}{name}`", type_text(field), default_text(field), field.description or "")
        rows.append("| " + " | ".join(_cell(text) for text in cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    """Table cell text: a `|` would end the cell, even inside a code span, and a line break the row."""
    return " ".join(text.split()).replace("|", "\\|")


PLAIN = {bool: "bool", int: "int", float: "float", str: "str", Path: "path", Any: "any"}


def type_text(field: FieldInfo) -> str:
    """The type as a reader wants it: `int > 0`, `float in (0, 1)`, one of `a | b`, `list[str]`, `path`."""
    kinds = [k for k in members_of(field.annotation) if k is not type(None)]
    values = [value for k in kinds if get_origin(k) is Literal for value in get_args(k)]
    parts = [_plain(k) for k in kinds if get_origin(k) is not Literal]
    if "int" in parts and "float" in parts:
        parts = ["number" if p == "int" else p for p in parts if p != "float"]
    bounds = _bounds(field.metadata)
    parts = [f"{p} {bounds}" if bounds and p in ("int", "float", "number") else p for p in parts]
    if len(values) == 1:
        parts.append(f"`{values[0]}`")
    elif values:
        parts.append("one of `" + " | ".join(map(str, values)) + "`")
    return " or ".join(parts)


def _plain(kind: Any) -> str:
    if is_section(kind):
        return "section"
    origin, args = get_origin(kind), get_args(kind)
    if origin is list:
        inner = members_of(args[0])
        if all(get_origin(k) is Literal for k in inner):
            return "list of `" + " | ".join(str(v) for k in inner for v in get_args(k)) + "`"
        if all(is_section(k) for k in inner):
            return "list of mappings"
        return f"list[{_plain(args[0])}]"
    if origin is dict:
        value = "mapping" if is_section(args[1]) or get_origin(args[1]) is dict else _plain(args[1])
        return f"dict[{_plain(args[0])}, {value}]"
    return PLAIN.get(kind, getattr(kind, "__name__", str(kind)))


def _bounds(metadata: list[Any]) -> str:
    """`> 0`, `>= 0`, `in (0, 1]`, ...: the range pydantic's gt/ge/lt/le allow."""
    low = next(((f"{m.gt:g}", "(", ">") for m in metadata if isinstance(m, Gt)), None)
    low = low or next(((f"{m.ge:g}", "[", ">=") for m in metadata if isinstance(m, Ge)), None)
    high = next(((f"{m.lt:g}", ")", "<") for m in metadata if isinstance(m, Lt)), None)
    high = high or next(((f"{m.le:g}", "]", "<=") for m in metadata if isinstance(m, Le)), None)
    if low and high:
        return f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
    if low or high:
        value, _, sign = low or high
        return f"{sign} {value}"
    return ""


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "*unset*"
    if isinstance(value, BaseModel):
        return "its defaults"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A default as it is written in YAML (flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_yaml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value) if value != "" else '""'


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tunewise.config.docs", description="Print the configuration reference (Markdown)."
    )
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the reference to FILE instead of stdout")
    args = parser.parse_args(argv)
    text = render_reference()
    if args.write is None:
        print(text, end="")
        return
    temporary = args.write.with_name(f".{args.write.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(args.write)  # a failed write leaves the old reference, never half of a new one


if __name__ == "__main__":
    main()
