"""curate/ray_engine.py: the Ray engine keeps and rejects exactly what the local engine does, on tweets and
on a synthetic corpus with planted duplicates; its pieces (chunk transport, LSH groupby, errors, no Ray)."""

from __future__ import annotations

import builtins
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from rich.console import Console

from support.curate import rec
from tunewise import api
from tunewise.config import load_config
from tunewise.config.curate import CurateConfig
from tunewise.curate.base import Context
from tunewise.curate.chain import Chain, chunked
from tunewise.curate.dedup import bucket_pairs
from tunewise.curate.engine import build_chain, plan_steps
from tunewise.curate.ray_engine import NO_RAY, decode_output, encode_error, encode_output, ray_bucket_pairs, require_ray
from tunewise.errors import ConfigError, DataError, TunewiseError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tweet-sentiment"
OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")


def _corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synthetic_corpus", ROOT / "bench" / "synthetic_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _both_engines(config: Path, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"curated-{engine}"
        loaded = load_config(config, [f"curate.output={out}"])
        api.curate(loaded, console=Console(quiet=True), engine=engine)
        outputs[engine] = {name: (out / name).read_bytes() for name in OUTPUTS if (out / name).exists()}
        report = json.loads((out / "curation_report.json").read_text())
        outputs[engine]["steps"] = json.dumps([{**s, "seconds": 0} for s in report["steps"]]).encode()
    return outputs


def _decisions(rejects: bytes) -> list[tuple[str, int, str, str]]:
    rows = [json.loads(line) for line in rejects.decode().splitlines()]
    return [(r["source"], r["line"], r["stage"], r["reason"]) for r in rows]


def test_ray_and_local_decide_alike_on_a_corpus_with_planted_duplicates(local_ray, tmp_path: Path):
    train = _corpus_module().write_corpus(tmp_path / "corpus.jsonl", 1500, seed=4)
    steps = [
        {"step": "validate"},
        {"step": "normalize"},
        {"step": "conflicts"},
        {"step": "exact_dedup"},
        {"step": "near_dedup", "threshold": 0.7},
        {"step": "quality"},
        {"step": "confidence"},
        {"step": "semantic_dedup", "threshold": 0.9},
        {"step": "label_errors", "action": "report"},
        {"step": "relevance", "description": "money and the economy", "min_score": -0.5},
        {"step": "split", "val": 0.1, "test": 0.2},
        {"step": "decontaminate", "ngram": 6},
        {"step": "balance", "per_class": 300},
    ]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"kind": "classification", "train": str(train)}, "curate": {"steps": steps}})
    )
    outputs = _both_engines(config, tmp_path)
    assert outputs["local"] == outputs["ray"]
    decided = _decisions(outputs["local"]["rejects.jsonl"])
    stages = {stage for _, _, stage, _ in decided}
    # every kind of planted row was found, so the comparison covered each stage's decisions
    assert {"validate", "conflicts", "exact_dedup", "near_dedup", "semantic_dedup", "quality", "confidence"} <= stages
    assert b"label_issue" in outputs["local"]["train.jsonl"]


@pytest.fixture(scope="module")
def tweets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tweets")
    subprocess.run([sys.executable, str(EXAMPLE / "prepare.py"), "--out", str(folder)], check=True, capture_output=True)
    lines = (folder / "raw.jsonl").read_text(encoding="utf-8").splitlines()
    sample = folder / "sample.jsonl"
    sample.write_text("\n".join(lines[::24]) + "\n", encoding="utf-8")  # 1,590 tweets from across the file
    return sample


def test_ray_and_local_decide_alike_on_tweets_with_the_examples_steps(local_ray, tweets: Path, tmp_path: Path):
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config["data"]["train"] = str(tweets)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    outputs = _both_engines(path, tmp_path)
    assert outputs["local"] == outputs["ray"]
    stages = {stage for _, _, stage, _ in _decisions(outputs["local"]["rejects.jsonl"])}
    assert {"exact_dedup", "near_dedup", "quality", "confidence"} <= stages


def test_the_ray_groupby_finds_the_same_candidate_pairs(local_ray):
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 40, size=(300, 4)).astype(np.uint64)  # many collisions
    np.testing.assert_array_equal(ray_bucket_pairs(bands), bucket_pairs(bands))
    assert ray_bucket_pairs(bands[:1]).shape == (0, 2)


def test_a_chunk_output_travels_as_npz_and_comes_back_whole():
    cfg = CurateConfig(
        steps=[{"step": "quality", "min_words": 2}, {"step": "normalize"}, {"step": "near_dedup"}, {"step": "split"}]
    )
    chain = build_chain(plan_steps(cfg.steps), Context(seed=0))
    items = [rec("Ca\u0301rs are   fun", line=1), rec("no", line=2), rec("cars are so fun", line=3)]
    out = chain.run(items, 7)
    back = decode_output(encode_output(out))
    assert (back.spool, back.sources, back.labels) == (out.spool, out.sources, out.labels)
    for name in ("rows", "lines", "splits", "status", "categories", "length_in", "length_out"):
        np.testing.assert_array_equal(getattr(back, name), getattr(out, name))
    assert back.changes.keys() == out.changes.keys() and back.fed.keys() == out.fed.keys()
    for slot, features in out.features.items():
        assert back.features[slot].keys() == features.keys()
        for name, values in features.items():
            np.testing.assert_array_equal(back.features[slot][name], values)


def test_an_error_raised_in_a_worker_comes_back_with_its_class_and_message():
    error = DataError("in.jsonl", 3, "text", "too odd", "fix it")
    with pytest.raises(DataError) as caught:
        decode_output(encode_error(error))
    assert str(caught.value) == str(error)


def test_an_error_in_a_ray_worker_reaches_the_user_as_one_line(local_ray, tmp_path: Path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"text": f"text number {i} here", "label": "a"}) for i in range(5)) + "\n")
    config = {
        "data": {"kind": "classification", "train": str(train)},
        "curate": {"output": str(tmp_path / "out"), "steps": [{"step": "relevance", "top_k": 2}]},
    }
    with pytest.raises(ConfigError) as caught:
        api.curate(config, console=Console(quiet=True), engine="ray")
    assert str(caught.value) == "curate step 1 (relevance): give a description or seeds, and top_k or min_score"


def test_without_ray_the_ray_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(TunewiseError, match=r"pip install 'tunewise\[ray\]'"):
        require_ray()
    assert "--engine local" in NO_RAY
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": "a b c", "label": "a"}) + "\n")
    config = {
        "data": {"kind": "classification", "train": str(train)},
        "curate": {"output": str(tmp_path / "o"), "steps": []},
    }
    with pytest.raises(TunewiseError, match="tunewise\\[ray\\]"):
        api.curate(config, console=Console(quiet=True), engine="ray")
    assert not (tmp_path / "o").exists()  # refused before anything was read or written


def test_an_unknown_engine_is_a_config_error(tmp_path: Path):
    config = {"data": {"kind": "classification", "train": str(tmp_path / "t.jsonl")}, "curate": {"steps": []}}
    with pytest.raises(ConfigError, match="unknown curation engine 'spark': use local or ray"):
        api.curate(config, console=Console(quiet=True), engine="spark")


def test_chunks_are_cut_alike_for_both_engines():
    assert [len(c) for c in chunked(range(5000), 2048)] == [2048, 2048, 904]
    assert isinstance(build_chain(plan_steps([]), Context(seed=0)), Chain)
