"""Config problems in the user's terms: pydantic's errors become one line each, naming the key as it is written
(`curate.steps[5] (near_dedup).threshold`), the key probably meant, and the file or override that caused it.

The functions take the root config model as `root`, so this module does not import tunewise.config.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Hashable, Sequence
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from tunewise.config.curate import AnyStep

Root = TypeVar("Root", bound=BaseModel)

CODE_FLAG_ONLY = (
    "eval.allow_code_execution is not a setting: generated code runs only when the command line of this "
    "invocation says so (--allow-code-execution)"
)


def check(root: type[Root], raw: dict[str, Any]) -> tuple[Root | None, dict[Hashable, str]]:
    """The config, or its problems, each described and keyed by what identifies it across overrides."""
    if isinstance(raw.get("eval"), dict) and "allow_code_execution" in raw["eval"]:
        # Whatever the value: a config, override, sweep or ablation arm never carries this permission.
        return None, {"allow_code_execution": CODE_FLAG_ONLY}
    try:
        return root.model_validate(raw), {}
    except ValidationError as exc:
        return None, {identity(err): describe(root, err, raw) for err in exc.errors()}


def identity(err: Any) -> Hashable:
    """Location, kind and message, and the value when it is a scalar: a section's value (a dict) changes with
    any key in it, which says nothing about who caused a problem with another key."""
    value = err.get("input")
    return err["loc"], err["type"], err["msg"], repr(value) if isinstance(value, str | int | float | None) else None


def origins(
    root: type[BaseModel],
    raw: dict[str, Any],
    overrides: Sequence[str],
    problems: dict[Hashable, str],
    apply: Callable[[dict[str, Any], str], None],
) -> dict[Hashable, str]:
    """The override that brought each problem: the last one before which the problem was absent (a problem
    missing here was there from the file on). Validating after each override (`apply` applies one), rather than
    matching keys, also blames the right one for a problem across sections (a metric the task lacks)."""
    layer, found = copy.deepcopy(raw), {}
    for override in overrides:
        present = check(root, layer)[1]
        found.update({key: f"override '{override}'" for key in problems if key not in present})
        apply(layer, override)
    return found


def describe(root: type[BaseModel], err: Any, raw: dict[str, Any]) -> str:
    """One pydantic error as a line naming the key as the user writes it."""
    loc, kind, msg = err["loc"], err["type"], str(err["msg"]).removeprefix("Value error, ")
    where = location(loc, raw)
    if kind == "extra_forbidden":
        return f"unknown key '{where}'{key_hint(root, loc, raw)}"
    if len(loc) == 3 and loc[:2] == ("curate", "steps") and kind in STEP_PROBLEMS:
        tag = str((err.get("ctx") or {}).get("tag"))
        close = difflib.get_close_matches(tag, STEP_MODELS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        known = ", ".join(STEP_MODELS)
        return f"'{where}': {STEP_PROBLEMS[kind].format(tag=tag, hint=hint, got=err.get('input'))}; steps: {known}"
    if not loc or msg.startswith(where):  # a check across keys: its message names them
        return msg
    if kind == "missing":
        return f"missing required key '{where}'"
    if isinstance(err.get("input"), dict) and kind == "value_error":  # a section's own check of its keys
        return f"'{where}': {msg}"
    return f"'{where}': {err['msg']} (got {err.get('input')!r})"


STEP_PROBLEMS = {  # what pydantic says of a `curate.steps` item that is no known step, in the user's terms
    "union_tag_invalid": "unknown step '{tag}'{hint}",
    "union_tag_not_found": "no 'step' key saying which step this is",
    "model_attributes_type": "a step is a mapping like {{step: near_dedup}}, not {got!r}",
}


def location(loc: tuple[Any, ...], raw: Any) -> str:
    """A location as the user writes it: dotted keys, list items by their 1-based position, a curation step
    with its name: `curate.steps[5] (near_dedup).threshold`, not pydantic's `curate.steps.4.near_dedup.threshold`."""
    text, node, parts = "", raw, list(loc)
    while parts:
        part = parts.pop(0)
        if isinstance(node, list) and isinstance(part, int):
            is_step = text == "curate.steps"
            text += f"[{part + 1}]"
            node = node[part] if 0 <= part < len(node) else None
            name = node.get("step") if is_step and isinstance(node, dict) else None
            if isinstance(name, str) and name in STEP_MODELS:
                text += f" ({name})"
                if parts and parts[0] == name:  # the union member pydantic names after the index
                    parts.pop(0)
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text


def key_hint(root: type[BaseModel], loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """The known key closest to an unknown one, else all the keys of its section."""
    parent = model_at(root, loc[:-1])
    if parent is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1)
    if close:
        return f" (did you mean '{location((*loc[:-1], close[0]), raw)}'?)"
    return f" (known: {', '.join(parent.model_fields)})"


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model at a pydantic location: through optional sections, a map's value or a list's item (the key
    or index in `loc`), and a curation step (named in `loc` after its index); None where there is no section."""
    model = root
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        kinds = members_of(field.annotation) if field else []
        containers = [k for k in kinds if get_origin(k) in (list, dict)]
        if containers and parts:
            parts.pop(0)
            kinds = members_of(get_args(containers[0])[-1])
        sections = [k for k in kinds if is_section(k)]
        if len(sections) > 1 and parts:
            tag = parts.pop(0)
            sections = [k for k in sections if k is STEP_MODELS.get(tag)]
        if len(sections) != 1:
            return None
        model = sections[0]
    return model


def is_config_key(root: type[BaseModel], dotted: str) -> bool:
    """Whether a dotted path (`train.lr`) names a key: a section's field, through sections only."""
    model: Any = root
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
    return True


def members_of(annotation: Any) -> list[Any]:
    """The types an annotation admits: `X | None` -> [X, NoneType]; `Annotated[X, ...]` -> those of X."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return members_of(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [member for arg in get_args(annotation) for member in members_of(arg)]
    return [annotation]


def is_section(kind: Any) -> bool:
    """A pydantic model (a section of the config), not a plain type or a generic like `list[str]`."""
    return get_origin(kind) is None and isinstance(kind, type) and issubclass(kind, BaseModel)


# Curation step name -> its settings model.
STEP_MODELS: dict[str, type[BaseModel]] = {
    get_args(step.model_fields["step"].annotation)[0]: step for step in members_of(AnyStep)
}
