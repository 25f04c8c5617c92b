"""The Modelfile's TEMPLATE + SYSTEM, read and rendered by Ollama's rules, give the trained prompt token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunewise.config import PromptSettings
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.errors import ExportError
from tunewise.export.modelfile import Modelfile, build_modelfile, ollama_prompt
from tunewise.export.modelfile_syntax import parse_modelfile, render_template

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["the car was great", "  spaced out\n\n", 'a "quote" {{ braces }} \\ end', "ünïcode ✓ 文字"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _records(kind: str, system: str | None) -> list[Record]:
    if kind == "classification":
        rows = [{"text": t, "label": LABELS[i % 3]} for i, t in enumerate(TEXTS)]
    elif kind == "completion":
        rows = [{"prompt": t, "completion": "done"} for t in TEXTS]
    elif kind == "alpaca":
        rows = [{"instruction": t, "input": "" if i % 2 else "some input", "output": "ok"} for i, t in enumerate(TEXTS)]
    else:
        rows = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]} for t in TEXTS]
        rows.append({"messages": [{"role": "user", "content": "no answer yet"}]})
        if system:  # the record's own system message, the same as the configured one
            rows.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]})
    return [Record(kind, row, "data.jsonl", i + 1) for i, row in enumerate(rows)]


def _shots(kind: str) -> list[Record]:
    return [
        Record(kind, record.fields, "train.jsonl", record.line)
        for record in _records(kind, None)
        if kind != "chat" and record.line in (2, 3)
    ]


def _assert_exact(renderer: PromptRenderer, modelfile: Modelfile, records: list[Record], tokenizer) -> None:
    parsed = parse_modelfile(modelfile.text)
    (template,) = parsed["TEMPLATE"]
    system = parsed["SYSTEM"][0] if parsed["SYSTEM"] else ""
    for record in records:
        sent = ollama_prompt(renderer, record, modelfile)
        ollama = render_template(template, system=system, prompt=sent)
        trained = renderer.prompt(record) + renderer.answer_prefix
        assert ollama == trained
        assert tokenizer.encode(ollama) == tokenizer.encode(trained)
        if modelfile.prompt_field:
            assert sent == record.fields[modelfile.prompt_field]


def _renderer(tokenizer, kind: str, labels: list[str] | None = None, **settings) -> PromptRenderer:
    shots = _shots(kind) if settings.get("few_shot") else None
    return PromptRenderer(PromptSettings(**settings), kind, tokenizer, labels, shots)


@pytest.mark.parametrize("kind", ["classification", "completion", "alpaca", "chat"])
@pytest.mark.parametrize("system", [None, "You are terse."])
@pytest.mark.parametrize("chat_template", [True, False])
@pytest.mark.parametrize("few_shot", [0, 2])
def test_every_kind_renders_the_trained_prompt_token_for_token(tokenizer, kind, system, chat_template, few_shot):
    if kind == "chat" and few_shot:
        pytest.skip("few-shot is not for chat data")
    renderer = _renderer(tokenizer, kind, LABELS, system=system, chat_template=chat_template, few_shot=few_shot)
    modelfile = build_modelfile(renderer, "model.gguf")
    assert modelfile.prompt_field == {"classification": "text", "completion": "prompt"}.get(kind)
    if modelfile.prompt_field is None:  # what to send instead of one field is always explained
        assert any("send the" in note for note in modelfile.notes)
    _assert_exact(renderer, modelfile, _records(kind, system), tokenizer)
    parsed = parse_modelfile(modelfile.text)
    assert parsed["FROM"] == ["model.gguf"]
    assert ("stop", "<|im_end|>") in parsed["PARAMETER"]
    assert ("temperature", "0") in parsed["PARAMETER"]
    uses_system = bool(system)  # a plain prompt carries the system text as its first paragraph
    assert parsed["SYSTEM"] == ([system] if uses_system else [])
    assert ("{{ .System }}" in parsed["TEMPLATE"][0]) == uses_system


def test_the_header_says_what_to_send(tokenizer):
    modelfile = build_modelfile(_renderer(tokenizer, "classification", LABELS), "model.gguf")
    header = [line for line in modelfile.text.splitlines() if line.startswith("#")]
    assert header and modelfile.text.startswith("#")
    assert any("`text` field" in line for line in header)


HOSTILE_TEMPLATE = (
    'He said """{{ text }}""" \\ back\\slash {% raw %}{{ .System }} {{ .Prompt }} }} {{/* c */}}{% endraw %}'
    '\n"""\n{{ "{{" }}\u200d\u00a0\t\r end "'
)


@pytest.mark.parametrize("chat_template", [True, False])
@pytest.mark.parametrize(
    "system",
    [
        'You are {{ .System }} and """quoted""" \\ and }} "',  # writable as SYSTEM
        'Line one """\nline two {{ .Prompt }}\u200b',  # """ before a line break, a zero-width space: not writable
    ],
)
def test_hostile_template_and_system_still_render_exactly(tokenizer, chat_template, system):
    renderer = _renderer(
        tokenizer,
        "classification",
        LABELS,
        template=HOSTILE_TEMPLATE,
        system=system,
        chat_template=chat_template,
        answer_prefix=' """{{',
        few_shot=2,
    )
    modelfile = build_modelfile(renderer, "model.gguf", parameters={"num_ctx": 4096})
    assert modelfile.prompt_field == "text"
    _assert_exact(renderer, modelfile, _records("classification", None), tokenizer)
    parsed = parse_modelfile(modelfile.text)
    assert "<|im_end|>" in modelfile.stops
    assert ("num_ctx", "4096") in parsed["PARAMETER"]
    if chat_template and "\n" not in system:
        assert parsed["SYSTEM"] == [system]  # written as it is, inserted without templating
    elif chat_template:
        assert parsed["SYSTEM"] == [] and any("fixed in the TEMPLATE" in note for note in modelfile.notes)


def test_a_filtered_field_falls_back_to_the_whole_user_turn(tokenizer):
    renderer = _renderer(tokenizer, "classification", LABELS, template="Text: {{ text | upper }}", system="Be brief.")
    modelfile = build_modelfile(renderer, "model.gguf")
    assert modelfile.prompt_field is None
    assert any("`text`" in note and "whole user turn" in note for note in modelfile.notes)
    records = _records("classification", None)
    _assert_exact(renderer, modelfile, records, tokenizer)
    assert ollama_prompt(renderer, records[0], modelfile) == "Text: THE CAR WAS GREAT"


def test_a_field_printed_twice_falls_back_to_the_whole_user_turn(tokenizer):
    renderer = _renderer(tokenizer, "completion", template="{{ prompt }}\n---\n{{ prompt }}")
    modelfile = build_modelfile(renderer, "model.gguf")
    assert modelfile.prompt_field is None and modelfile.notes
    _assert_exact(renderer, modelfile, _records("completion", None), tokenizer)


def test_a_field_under_a_condition_falls_back(tokenizer):
    renderer = _renderer(tokenizer, "completion", template="{% if prompt %}Q: {{ prompt }}{% else %}none{% endif %}")
    assert build_modelfile(renderer, "model.gguf").prompt_field is None


def test_a_chat_template_that_changes_messages_cannot_be_exported(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ExportError, match="chat template changes the text"):
        build_modelfile(_renderer(tokenizer, "classification", LABELS), "model.gguf")


def test_a_conversation_of_several_turns_is_refused_per_record(tokenizer):
    renderer = _renderer(tokenizer, "chat")
    modelfile = build_modelfile(renderer, "model.gguf")
    turns = [{"role": r, "content": c} for r, c in [("user", "hi"), ("assistant", "yo"), ("user", "and?")]]
    with pytest.raises(ExportError, match="data.jsonl:7: .*one user turn"):
        ollama_prompt(renderer, Record("chat", {"messages": turns}, "data.jsonl", 7), modelfile)


def test_parameters_are_written_and_checked(tokenizer):
    renderer = _renderer(tokenizer, "classification", LABELS)
    parsed = parse_modelfile(build_modelfile(renderer, "m.gguf", parameters={"temperature": 0.7, "top_k": 1}).text)
    assert [v for k, v in parsed["PARAMETER"] if k == "temperature"] == ["0.7"]
    assert ("top_k", "1") in parsed["PARAMETER"]
    with pytest.raises(ExportError, match="num ctx"):
        build_modelfile(renderer, "m.gguf", parameters={"num ctx": 1})
    with pytest.raises(ExportError, match="cannot be written"):
        build_modelfile(renderer, "model\x00.gguf")
