"""The text normalization curation applies to what the model reads, as one value that evaluation and
prediction apply too: train, eval and predict text go through the same function."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tunewise.data.records import ANSWER_FIELDS, TEXT_FIELDS, Record
from tunewise.errors import ConfigError

# The kinds of change, in the order they are applied; the names appear in curation reports.
MOJIBAKE, NFC, WHITESPACE = "mojibake", "nfc", "whitespace"
MAX_ROUNDS = 4  # repair rounds until nothing changes; in practice one or two


@dataclass(frozen=True)
class TextNormalization:
    """Which repairs a normalize step applies to record text. Answers (completion, output, assistant turns)
    are left alone unless `answers`; a classification label is never text and never touched."""

    nfc: bool = True
    whitespace: bool = True
    fix_mojibake: bool = True
    answers: bool = False

    @classmethod
    def of(cls, settings: Any) -> TextNormalization:
        """From a normalize step's settings (or anything with these four attributes)."""
        return cls(**{f.name: bool(getattr(settings, f.name)) for f in fields(cls)})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextNormalization:
        return cls(**{f.name: bool(data[f.name]) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, record: Record) -> Record:
        """The record with its text normalized; the same object when nothing changes."""
        return self.apply_counted(record)[0]

    def changes(self, record: Record) -> set[str]:
        """The kinds of change (MOJIBAKE, NFC, WHITESPACE) `apply` makes to this record; empty if none."""
        return self.apply_counted(record)[1]

    def apply_counted(self, record: Record) -> tuple[Record, set[str]]:
        """`apply` and `changes` in one pass: what curation uses to count what it changed."""
        kinds: set[str] = set()
        return map_text(record, lambda text: self.fix(text, kinds), answers=self.answers), kinds

    def fix(self, text: str, kinds: set[str] | None = None) -> str:
        """One string normalized; the kinds of change made are added to `kinds`.

        Repeated to a fixed point: ftfy judges mojibake on the text as a whole, so tidied whitespace can
        make it see mojibake it did not before, and normalizing curated text again (an eval split that
        curation wrote) must change nothing.
        """
        for _ in range(MAX_ROUNDS):
            before = text
            for kind, enabled, repair in (
                (MOJIBAKE, self.fix_mojibake, _repair_mojibake),
                (NFC, self.nfc, _nfc),
                (WHITESPACE, self.whitespace, _tidy_whitespace),
            ):
                if enabled and (fixed := repair(text)) != text:
                    text = fixed
                    if kinds is not None:
                        kinds.add(kind)
            if text == before:
                break
        return text


def inference_normalization(steps: Iterable[Any] | None) -> TextNormalization | None:
    """The normalization evaluation and prediction inputs need: that of the enabled normalize step(s) whose
    `apply_to_text` is true (e.g. `config.curate.steps`), or None when curation changes no text.

    Steps are recognised by `.step == "normalize"`. Several such steps must agree (each normalization is
    idempotent, so repeating one changes nothing): differing ones would give training text that no single
    normalization of eval inputs reproduces, and are refused.
    """
    found: dict[TextNormalization, int] = {}
    for position, step in enumerate(steps or (), start=1):
        if getattr(step, "step", None) == "normalize" and getattr(step, "enabled", True) and step.apply_to_text:
            found.setdefault(TextNormalization.of(step), position)
    if len(found) > 1:
        first, second = list(found.values())[:2]
        raise ConfigError(
            f"curate steps {first} and {second} (normalize) change the text differently; evaluation and "
            "prediction inputs get one normalization, so give them the same nfc, whitespace, fix_mojibake "
            "and answers settings, or keep one"
        )
    return next(iter(found), None)


def map_text(record: Record, fn: Callable[[str], str], answers: bool = True) -> Record:
    """The record with `fn` applied to its text fields (answers too if asked); the same object if unchanged."""
    fields_: dict[str, Any] = dict(record.fields)
    if record.kind == "chat":
        fields_["messages"] = [
            {**m, "content": fn(m["content"]) if answers or m["role"] != "assistant" else m["content"]}
            for m in record.fields["messages"]
        ]
    else:
        for name in TEXT_FIELDS[record.kind]:
            if isinstance(fields_.get(name), str) and (answers or name != ANSWER_FIELDS.get(record.kind)):
                fields_[name] = fn(fields_[name])
    return record if fields_ == dict(record.fields) else replace(record, fields=fields_)


def _repair_mojibake(text: str) -> str:
    import ftfy

    # ftfy's repairs of mojibake and encoding damage (HTML entities, C1 controls and the like). NFC and line
    # breaks are left to the nfc and whitespace settings, so that each is switched and counted on its own;
    # curly quotes, a matter of style, are kept.
    return ftfy.fix_text(text, uncurl_quotes=False, normalization=None, fix_line_breaks=False)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _tidy_whitespace(text: str) -> str:
    """Line breaks as \\n (splitlines knows \\r\\n, \\r, U+2028 ...), each line tidied, no empty lines at either end."""
    return "\n".join(_tidy_line(line) for line in text.splitlines()).strip("\n")


def _tidy_line(line: str) -> str:
    """Collapse runs of spaces inside a line; keep its indentation (code, lists) and drop trailing space."""
    body = line.lstrip(" \t")
    return line[: len(line) - len(body)] + " ".join(body.split())
