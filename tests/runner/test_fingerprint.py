"""The fingerprint a resume compares: what a pipeline says, not how many settings this version has."""

from __future__ import annotations

from pathlib import Path

from steadyflow.runner.run import spec_hash
from steadyflow.spec.loader import load_pipeline

PIPELINE = """
pipeline: fp
models: {m: {provider: openai, base_url: "http://127.0.0.1:9/v1"}}
stages:
  - id: s
    kind: rules
    rules: {fields: {label: {default: x}}}
    output: {label: {type: string}}
"""


def _hash(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    return spec_hash(load_pipeline(file, overrides))


def test_the_fingerprint_is_what_the_file_says_not_what_this_version_defaults(tmp_path: Path) -> None:
    # a golden value: a new setting with a default (in any later version) must leave it as it is, or the
    # runs an upgrade interrupted could not be resumed; only a change of the file (or of --set) may change it
    assert _hash(tmp_path, PIPELINE) == "72d38b5b9c5c9318"
    assert _hash(tmp_path, PIPELINE + "run: {concurrency: 8, chunk_size: 50}\n") == "72d38b5b9c5c9318"


def test_a_changed_setting_or_override_does(tmp_path: Path) -> None:
    plain = _hash(tmp_path, PIPELINE)
    assert _hash(tmp_path, PIPELINE + "run: {concurrency: 9}\n") != plain
    assert _hash(tmp_path, PIPELINE, ["run.chunk_size=7"]) != plain
