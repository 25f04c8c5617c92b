"""data/variants.py: the prompts a run is evaluated with (the configured one and each variant) and the few-shot
examples drawn for them."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from tunewise.config import validate_config
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.data.variants import DEFAULT_PROMPT, draw_shots, prompt_variants


def _record(text: str, label: str | None = "positive", line: int = 1) -> Record:
    if label is None:
        return Record("completion", {"prompt": text, "completion": "ok"}, "t.jsonl", line)
    return Record("classification", {"text": text, "label": label}, "t.jsonl", line)


def test_the_default_prompt_and_each_variant_render_with_their_own_settings(tiny_model_dir: Path, tmp_path: Path):
    config = validate_config(
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"kind": "classification", "train": str(tmp_path / "train.jsonl")},
            "prompt": {
                "template": "Text: {{ text }}",
                "chat_template": False,
                "variants": {"terse": {"template": "{{ text }} ->"}, "shots": {"few_shot": 2}},
            },
        }
    )
    train = [_record(f"good {i}", "positive", i) for i in range(4)] + [_record("bad", "negative", 9)]
    splits = DataSplits(train, [], [], labels=["negative", "positive"])
    renderers = prompt_variants(config, AutoTokenizer.from_pretrained(tiny_model_dir), splits)
    assert list(renderers) == [DEFAULT_PROMPT, "terse", "shots"]
    question = _record("the car")
    assert renderers[DEFAULT_PROMPT].prompt(question) == "Text: the car"
    assert renderers["terse"].prompt(question) == "the car ->"
    assert renderers["terse"].field == "prompt.variants.terse.template"  # errors name the variant's template
    assert renderers["shots"].field == "prompt.template"
    shown = renderers["shots"].prompt(question)
    assert shown.endswith("Text: the car") and shown.count("Text: ") == 3 and "Text: bad" in shown


def test_shots_without_labels_are_a_seeded_sample():
    train = [_record(f"q{i}", None, i) for i in range(20)]
    first = draw_shots(train, 3, seed=5, labels=[])
    assert len(first) == 3 and first == draw_shots(train, 3, seed=5, labels=[])
    assert len(draw_shots(train[:2], 5, seed=5, labels=[])) == 2  # no more than there are
    assert draw_shots(train, 0, seed=5, labels=[]) == []


def test_classification_shots_cycle_through_the_labels():
    train = [_record(f"{label} {i}", label, i) for label in ("a", "b", "c") for i in range(10)]
    shots = draw_shots(train, 6, seed=0, labels=["a", "b", "c"])
    assert sorted(s.label for s in shots) == ["a", "a", "b", "b", "c", "c"]
    assert len({s.text for s in shots}) == 6  # no example twice
