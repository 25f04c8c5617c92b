"""The user-facing errors: one class to catch at the CLI, and DataError's one-line message naming file, line,
field, reason and fix."""

from __future__ import annotations

import pytest

from tunewise.errors import ConfigError, DataError, ModelLoadError, RenderError, TunewiseError


@pytest.mark.parametrize(
    ("line", "field", "hint", "message"),
    [
        (7, "label", "set data.labels", "data/train.jsonl:7: field 'label': empty value (set data.labels)"),
        (7, None, "set data.labels", "data/train.jsonl:7: empty value (set data.labels)"),
        (7, "label", "", "data/train.jsonl:7: field 'label': empty value"),
        # line 0: a problem with the whole file, not one of its rows
        (0, None, "", "data/train.jsonl: empty value"),
        (0, "text", "check data.train", "data/train.jsonl: field 'text': empty value (check data.train)"),
    ],
)
def test_data_error_message_names_where_what_and_the_fix(line: int, field: str | None, hint: str, message: str):
    error = DataError("data/train.jsonl", line, field, "empty value", hint)
    assert str(error) == message
    # the parts stay readable on their own, for callers that report them separately
    assert (error.source, error.line, error.field, error.reason, error.hint) == (
        "data/train.jsonl",
        line,
        field,
        "empty value",
        hint,
    )


def test_data_error_without_a_hint_adds_no_parentheses():
    error = DataError("rows.csv", 3, "text", "not a string")
    assert str(error) == "rows.csv:3: field 'text': not a string" and error.hint == ""


def test_render_error_keeps_the_reason_apart_from_the_location():
    located = RenderError("the template needs 'input'", where="train.jsonl:4")
    assert str(located) == "train.jsonl:4: the template needs 'input'"
    assert located.reason == "the template needs 'input'" and located.where == "train.jsonl:4"
    assert str(RenderError("the template needs 'input'")) == "the template needs 'input'"


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("train.lr: must be > 0"),
        DataError("train.jsonl", 1, None, "invalid JSON"),
        ModelLoadError("no model at ./missing"),
        RenderError("bad template"),
    ],
)
def test_every_user_error_is_caught_as_a_tunewise_error(error: TunewiseError):
    # The CLI catches TunewiseError alone to print one line instead of a traceback.
    with pytest.raises(TunewiseError) as caught:
        raise error
    assert caught.value is error and isinstance(error, Exception)


def test_config_error_message_is_the_text_given():
    error = ConfigError("config.yaml: train.lr: must be > 0")
    assert str(error) == "config.yaml: train.lr: must be > 0" and error.args == ("config.yaml: train.lr: must be > 0",)
    assert not isinstance(error, DataError)  # a config problem is not blamed on a data file
