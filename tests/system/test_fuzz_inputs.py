"""Hostile data: malformed JSONL, CSV and Parquet fed to loading/validation and to curation.

Never a crash or a traceback: the only exception allowed is a DataError for a file that cannot be read as
a whole, and it names the file. Every record (a non-blank JSONL line, a CSV data row, a Parquet row) is
kept or rejected with a reason, exactly once; records built valid are kept, records built broken are
rejected. How the files are built and what must happen to them: tests/hostile.py. The number of cases
generated per format is printed when the module ends ("fuzz cases run: ...").
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rich.console import Console

from support.hostile import Case, csv_cases, jsonl_cases
from support.hostile_parquet import parquet_cases
from tunewise.config import DataConfig, validate_config
from tunewise.curate.stage import curate
from tunewise.data.splits import load_file, load_splits
from tunewise.errors import DataError

CASES: Counter[str] = Counter()  # generated cases per test, printed at the end of the module
HUGE_CASES: Counter[str] = Counter()  # of them, cases with a 1-5 MB value
HUGE = (0, 0, 0, 0, 1 << 20, 5 << 20)  # text of 1 or 5 MB in some cases
# derandomize: the same cases on every run and in CI; no example database written into the tree; no
# shrinking (it can take minutes on these inputs; the failing case is reported as generated, and rerun alike).
FUZZ = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "phases": (Phase.explicit, Phase.generate),
    "suppress_health_check": list(HealthCheck),
}


@pytest.fixture(scope="module", autouse=True)
def report_fuzz_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    summary = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
    huge = ", ".join(f"{name} {n}" for name, n in sorted(HUGE_CASES.items()))
    line = f"fuzz cases run: {summary}; total {sum(CASES.values())} (with a 1-5 MB value: {huge})"
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


def _write(case: Case, directory: Path) -> Path:
    path = directory / f"train.{case.fmt}"
    path.write_bytes(case.data)
    return path


def check_loading(case: Case) -> None:
    HUGE_CASES[case.fmt] += any(note.startswith("huge") for note in case.notes)
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(case, Path(tmp))
        cfg = DataConfig(kind=case.kind, train=path, fields=case.mapping, on_error="skip")
        if case.whole_file_error:
            with pytest.raises(DataError) as info:
                load_file(path, cfg)
            assert str(info.value).startswith(str(path)), info.value
            return
        records, rejects, total = load_file(path, cfg)
        assert total == case.records, case.notes
        kept, rejected = [r.line for r in records], [r.line for r in rejects]
        assert len(set(kept + rejected)) == len(kept) + len(rejected) == total, "a record counted twice"
        if case.record_lines is not None:
            assert set(kept + rejected) == case.record_lines, case.notes
        assert case.must_keep <= set(kept), ([r.reason for r in rejects if r.line in case.must_keep], case.notes)
        assert case.must_reject <= set(rejected), case.notes
        assert all(r.reason and r.source == str(path) for r in rejects)
        for record in records:  # what is kept can be written as UTF-8 JSONL (no lone surrogates)
            json.dumps(record.to_row(), ensure_ascii=False, default=str).encode("utf-8")
        _check_strict(path, cfg, min(rejected, default=None))
        _check_splits(path, cfg, total)


def _check_strict(path: Path, cfg: DataConfig, first_bad: int | None) -> None:
    """With data.on_error: raise, the first bad record stops the load, named by file and line."""
    strict = cfg.model_copy(update={"on_error": "raise"})
    if first_bad is None:
        load_file(path, strict)
        return
    with pytest.raises(DataError) as info:
        load_file(path, strict)
    assert str(info.value).startswith(f"{path}:{first_bad}: ") and "on_error: skip" in str(info.value)


def _check_splits(path: Path, cfg: DataConfig, total: int) -> None:
    """load_splits (what `tunewise run` uses): every record in a split or a reject, or a DataError naming the file."""
    try:
        splits = load_splits(cfg, seed=0)
    except DataError as exc:
        assert str(exc).startswith(str(path)) and ("no usable" in str(exc) or "too few records" in str(exc))
        return
    assert len(splits.train) + len(splits.val) + len(splits.test) + len(splits.rejects) == total


@settings(max_examples=150, **FUZZ)
@given(case=jsonl_cases(huge=HUGE))
def test_loading_hostile_jsonl(case: Case) -> None:
    CASES["jsonl"] += 1
    check_loading(case)


@settings(max_examples=150, **FUZZ)
@given(case=csv_cases(huge=HUGE))
def test_loading_hostile_csv(case: Case) -> None:
    CASES["csv"] += 1
    check_loading(case)


@settings(max_examples=120, **FUZZ)
@given(case=parquet_cases(huge=HUGE))
def test_loading_hostile_parquet(case: Case) -> None:
    CASES["parquet"] += 1
    check_loading(case)


CURATE_STEPS = [
    {"step": "normalize", "strip_for_key": ["urls", "mentions"]},
    {"step": "conflicts"},
    {"step": "exact_dedup"},
    {"step": "near_dedup", "threshold": 0.8},
    {"step": "confidence", "min": 0.5},
    {"step": "balance", "per_class": 4},
    {"step": "split", "val": 0.2, "test": 0.2},
    {"step": "decontaminate", "ngram": 3},
]


@settings(max_examples=50, **FUZZ)
@given(
    case=st.sampled_from([jsonl_cases(size=2_000), csv_cases(size=2_000), parquet_cases(size=2_000)]).flatmap(
        lambda formats: formats
    ),
    max_tokens=st.sampled_from([None, None, 40]),
    languages=st.sampled_from([None, None, ["en"]]),
)
def test_curating_hostile_files(
    case: Case, max_tokens: int | None, languages: list[str] | None, tiny_model_dir: Path
) -> None:
    CASES[f"curate-{case.fmt}"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path, out = _write(case, Path(tmp)), Path(tmp) / "curated"
        steps = [
            {"step": "validate", "max_tokens": max_tokens},
            {"step": "quality", "min_words": 1, "languages": languages},
            *CURATE_STEPS,
        ]
        config = validate_config(
            {
                "model": {"name": str(tiny_model_dir)},  # the tokenizer measures max_tokens
                "data": {"kind": case.kind, "train": str(path), "fields": case.mapping},
                "curate": {"output": str(out), "steps": steps},
            }
        )
        if case.whole_file_error:
            with pytest.raises(DataError) as info:
                curate(config, Console(quiet=True))
            assert str(info.value).startswith(str(path))
            return
        curate(config, Console(quiet=True))
        splits = [out / f"{name}.jsonl" for name in ("train", "val", "test")]
        kept = sum(len(p.read_text("utf-8").splitlines()) for p in splits if p.exists())  # no empty val/test
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text("utf-8").splitlines()]
        assert kept + len(rejects) == case.records, case.notes
        assert all(r["reason"] and r["stage"] and r["category"] and r["source"] == str(path) for r in rejects)
        # rejected when read (validate may also drop a well-formed record its model cannot render)
        format_rejects = {r["line"] for r in rejects if r["category"].split(":")[0] == "format"} - {
            r["line"] for r in rejects if r["category"] == "format:unrenderable"
        }
        assert case.must_reject <= format_rejects, case.notes
        assert not case.must_keep & format_rejects, case.notes
        if case.record_lines is not None:
            assert {r["line"] for r in rejects} <= case.record_lines
        report = json.loads((out / "curation_report.json").read_text("utf-8"))
        assert report["totals"] == {"input": case.records, "kept": kept, "rejected": len(rejects)}
        assert "Curation report" in (out / "curation_report.html").read_text("utf-8")
