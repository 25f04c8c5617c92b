"""TextNormalization: the one normalization that curation applies to training text and evaluation and
prediction apply to their inputs, so the text the model reads cannot differ between them."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tunewise.data.normalize as normalize_module
from tunewise.config.curate import CurateConfig, NormalizeStep
from tunewise.curate.base import Context
from tunewise.curate.text_steps import Normalize
from tunewise.data.normalize import MOJIBAKE, NFC, WHITESPACE, TextNormalization, inference_normalization
from tunewise.data.records import Record
from tunewise.errors import ConfigError


def text_record(text: str) -> Record:
    return Record("classification", {"text": text, "label": "pos"}, "in.jsonl", 1)


def step_output(settings: NormalizeStep, record: Record) -> Record:
    (verdict,) = Normalize(settings)([record], Context(seed=0))
    return verdict.record


def test_mojibake_is_repaired_identically_by_the_step_and_by_apply():
    record = text_record("Price:  Â£5   off")
    settings = NormalizeStep(step="normalize")
    by_step = step_output(settings, record)
    by_apply = TextNormalization.of(settings).apply(record)
    assert by_step.fields["text"] == by_apply.fields["text"] == "Price: £5 off"
    assert by_apply.fields["label"] == "pos"


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("Price: Â£5 off", {MOJIBAKE}),
        ("cafe\u0301 ok", {NFC}),
        ("too   many spaces", {WHITESPACE}),
        ("line one\r\nline two", {WHITESPACE}),
        ("isnâ€™t  bad", {MOJIBAKE, WHITESPACE}),
        ("clean text", set()),
    ],
)
def test_changes_names_each_kind_of_repair(text: str, kinds: set[str]):
    assert TextNormalization().changes(text_record(text)) == kinds


def test_each_kind_can_be_switched_off():
    record = text_record("isnâ€™t  cafe\u0301")
    assert TextNormalization(fix_mojibake=False).apply(record).fields["text"] == "isnâ€™t caf\u00e9"
    assert TextNormalization(whitespace=False).apply(record).fields["text"] == "isn’t  caf\u00e9"
    assert TextNormalization(nfc=False).apply(record).fields["text"] == "isn’t cafe\u0301"


def test_an_unchanged_record_is_the_same_object():
    record = text_record("nothing to fix here")
    assert TextNormalization().apply(record) is record


@given(st.text(max_size=60))
def test_normalizing_twice_changes_nothing_more(text: str):
    normalization = TextNormalization(answers=True)
    once = normalization.apply(text_record(text or "x"))
    assert normalization.apply(once) is once
    assert normalization.changes(once) == set()


def test_answers_are_untouched_unless_asked():
    record = Record("completion", {"prompt": "Say  Â£", "completion": " Â£  1"}, "c.jsonl", 1)
    assert TextNormalization().apply(record).fields == {"prompt": "Say £", "completion": " Â£  1"}
    assert TextNormalization(answers=True).apply(record).fields["completion"] == " £ 1"
    chat = Record(
        "chat",
        {"messages": [{"role": "user", "content": "hi  there"}, {"role": "assistant", "content": "ok  then"}]},
        "chat.jsonl",
        1,
    )
    contents = [m["content"] for m in TextNormalization().apply(chat).fields["messages"]]
    assert contents == ["hi there", "ok  then"]


def test_json_round_trip():
    normalization = TextNormalization(nfc=False, whitespace=True, fix_mojibake=False, answers=True)
    assert normalization.to_json() == {"nfc": False, "whitespace": True, "fix_mojibake": False, "answers": True}
    assert TextNormalization.from_json(normalization.to_json()) == normalization


def _steps(*steps: dict) -> list:
    return CurateConfig(steps=list(steps)).steps


def test_inference_normalization_is_that_of_the_enabled_text_changing_normalize_step():
    steps = _steps({"step": "exact_dedup"}, {"step": "normalize", "nfc": False, "answers": True})
    assert inference_normalization(steps) == TextNormalization(nfc=False, answers=True)
    assert inference_normalization(_steps({"step": "normalize", "enabled": False})) is None
    assert inference_normalization(_steps({"step": "normalize", "apply_to_text": False})) is None
    assert inference_normalization(_steps({"step": "exact_dedup"})) is None
    assert inference_normalization([]) is None
    assert inference_normalization(None) is None


def test_inference_normalization_is_duck_typed_on_the_step_name():
    step = SimpleNamespace(step="normalize", enabled=True, apply_to_text=True, nfc=True, whitespace=False)
    step.fix_mojibake, step.answers = True, False
    assert inference_normalization([step]) == TextNormalization(whitespace=False)


def test_normalize_steps_that_change_text_differently_are_refused():
    same = _steps({"step": "normalize"}, {"step": "exact_dedup"}, {"step": "normalize"})
    assert inference_normalization(same) == TextNormalization()
    differing = _steps({"step": "normalize"}, {"step": "exact_dedup"}, {"step": "normalize", "whitespace": False})
    with pytest.raises(ConfigError, match=r"curate steps 1 and 3 \(normalize\) change the text differently"):
        inference_normalization(differing)


def test_the_data_layer_module_imports_neither_curate_nor_config():
    tree = ast.parse(Path(normalize_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith(("tunewise.curate", "tunewise.config"))}
