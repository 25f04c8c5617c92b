"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class TunewiseError(Exception):
    """An error with a message written for the user: what is wrong, where, and what to do."""


class ConfigError(TunewiseError):
    pass


class DataError(TunewiseError):
    """A bad record: names the file, the line or row, the field and the fix."""

    def __init__(self, source: str, line: int, field: str | None, reason: str, hint: str = "") -> None:
        self.source, self.line, self.field, self.reason, self.hint = source, line, field, reason, hint
        where = f"{source}:{line}" if line else source
        what = f"field '{field}': {reason}" if field else reason
        super().__init__(f"{where}: {what}" + (f" ({hint})" if hint else ""))


class ModelLoadError(TunewiseError):
    pass


class RenderError(TunewiseError):
    """One record's prompt could not be rendered (its content, not the config, is to blame)."""

    def __init__(self, reason: str, where: str = "") -> None:
        self.reason, self.where = reason, where  # the reason without the location, for a reject
        super().__init__(f"{where}: {reason}" if where else reason)


class ExportError(TunewiseError):
    """A run cannot be exported as asked: no adapter, an unmergeable adapter, an unsupported architecture..."""
