"""The default GGUF: assembled from its PyPI packages, pinned by SHA-256, rebuilt when damaged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steadyflow.providers.local_model import (
    DEFAULT_MODEL,
    LocalModelError,
    PackagedModel,
    check_gguf,
    default_model,
    file_sha256,
    model_file,
)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STEADYFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_assembles_the_pinned_file_into_the_cache(own_cache: Path) -> None:
    path, note = default_model()
    assert path == model_file() and path.is_relative_to(own_cache)
    assert path.stat().st_size == DEFAULT_MODEL.size == 491_400_064
    assert file_sha256(path) == DEFAULT_MODEL.sha256
    assert note.startswith("assembled")
    assert default_model() == (path, "verified")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_truncated_or_wrong_file_is_refused_and_rebuilt(own_cache: Path, damage: str) -> None:
    path, _ = default_model()
    if damage == "truncate":
        os.truncate(path, 1000)
    else:
        with path.open("r+b") as handle:
            handle.seek(DEFAULT_MODEL.size // 2)
            byte = handle.read(1)
            handle.seek(DEFAULT_MODEL.size // 2)
            handle.write(bytes([byte[0] ^ 0xFF]))
    rebuilt, note = default_model()
    assert "failed verification" in note and DEFAULT_MODEL.sha256[:16] in note
    assert file_sha256(rebuilt) == DEFAULT_MODEL.sha256


def test_packages_that_do_not_make_the_pinned_file_are_refused(own_cache: Path) -> None:
    wrong = PackagedModel(
        name="wrong",
        parts=DEFAULT_MODEL.parts[:2],
        size=DEFAULT_MODEL.size,
        sha256=DEFAULT_MODEL.sha256,
        licence="x",
        origin="x",
    )
    with pytest.raises(LocalModelError, match="do not make the pinned file"):
        default_model(wrong)
    assert not model_file(wrong).exists()


def test_missing_packages_say_how_to_install_them(own_cache: Path) -> None:
    missing = PackagedModel(
        name="missing",
        parts=(("steadyflow-no-such-package", "x.bin"),),
        size=1,
        sha256="0" * 64,
        licence="x",
        origin="x",
    )
    with pytest.raises(LocalModelError, match=r"pip install 'steadyflow\[local\]'"):
        default_model(missing)


def test_user_model_path_must_be_gguf_and_match_its_pin(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="does not exist"):
        check_gguf(tmp_path / "nope.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        check_gguf(text)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    assert check_gguf(gguf) == gguf
    assert check_gguf(gguf, file_sha256(gguf).upper()) == gguf
    with pytest.raises(LocalModelError, match="but the pipeline pins"):
        check_gguf(gguf, "0" * 64)
