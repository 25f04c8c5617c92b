"""Data in: files -> validated `Record`s (or `Reject`s with reasons) -> splits."""

from tunewise.data.records import KIND_FIELDS, Record, Reject
from tunewise.data.splits import DataSplits, load_splits

__all__ = ["KIND_FIELDS", "DataSplits", "Record", "Reject", "load_splits"]
