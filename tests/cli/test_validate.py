"""`steadyflow validate` on untrusted files: plugins are not imported in safe mode, bombs fail fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "steadyflow.cli"]

PIPELINE = """pipeline: p
plugins: [evil_plugin]
models:
  m: {provider: openai, model: x, base_url: "http://127.0.0.1:1/v1"}
stages:
  - id: s
    kind: ai
    prompt: {template: "{{ text }}"}
    output: {a: {type: string}}
    validate: [{layer: business, check: made_up_check}]
    ladder: [{model: m}]
"""
PLUGIN = """from pathlib import Path
Path(__file__).with_name("imported.marker").write_text("the plugin ran")
"""


def _cli(folder: Path, *args: str, ci: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([*CLI, "validate", *args], cwd=folder, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "evil_plugin.py").write_text(PLUGIN)
    return tmp_path


def test_no_plugins_imports_nothing_and_says_so_once(folder: Path) -> None:
    result = _cli(folder, "--no-plugins", "p.yaml", "p.yaml")
    assert result.returncode == 0, result.stderr
    assert not (folder / "imported.marker").exists()
    note = "plugin checks, stage kinds and output_model classes were not imported or verified (--no-plugins"
    assert result.stderr.count(note) == 1


def test_ci_makes_no_plugins_the_default_and_plugins_forces_the_import(folder: Path) -> None:
    result = _cli(folder, "p.yaml", ci="true")
    assert result.returncode == 0 and "(CI is set;" in result.stderr
    assert not (folder / "imported.marker").exists()
    forced = _cli(folder, "--plugins", "p.yaml", ci="true")
    assert (folder / "imported.marker").exists()
    assert forced.returncode == 2 and "unknown check 'made_up_check'" in forced.stderr


def test_without_ci_plugins_are_imported_and_checked(folder: Path) -> None:
    result = _cli(folder, "p.yaml")
    assert result.returncode == 2 and "unknown check 'made_up_check'" in result.stderr
    assert (folder / "imported.marker").exists()


def test_no_plugins_does_not_import_an_output_model(folder: Path) -> None:
    (folder / "p.yaml").write_text(
        PIPELINE.replace("output: {a: {type: string}}", "output_model: 'evil_plugin:Model'")
        .replace("plugins: [evil_plugin]\n", "")
        .replace("validate: [{layer: business, check: made_up_check}]", "")
    )
    result = _cli(folder, "--no-plugins", "p.yaml")
    assert result.returncode == 0, result.stderr
    assert not (folder / "imported.marker").exists()


def test_a_fifo_prompt_fails_in_a_line_within_seconds(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.md")
    (tmp_path / "p.yaml").write_text(
        PIPELINE.replace('{template: "{{ text }}"}', "{file: fifo.md}").replace("plugins: [evil_plugin]\n", "")
    )
    started = time.monotonic()
    result = _cli(tmp_path, "--no-plugins", "p.yaml")
    assert time.monotonic() - started < 20
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = (
        "p.yaml:7:20: stages[0].prompt.file: prompt file 'fifo.md' is not a regular file (a FIFO): name a text file"
    )
    assert result.stderr.splitlines()[0] == expected


@pytest.mark.parametrize(
    "name", ["merge_key_bomb", "yaml_nested_deep", "cel_bombs", "prompt_huge_expression", "output_reserved_names"]
)
def test_bombs_are_one_line_each_exit_2_no_traceback(name: str) -> None:
    result = _cli(ROOT, f"tests/fixtures/invalid/{name}.yaml")
    assert result.returncode == 2
    assert result.stderr == (ROOT / f"tests/fixtures/invalid/{name}.expected").read_text()


RULES_STAGE = """pipeline: p
stages:
  - id: r
    kind: rules
    rules: {fields: {category: {default: billing}}}
    output: {category: {enum: [billing]}}
    validate: [{layer: business, check: made_up_check}]
"""


def test_an_unknown_check_on_a_rules_stage_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RULES_STAGE)
    result = _cli(tmp_path, "p.yaml")
    assert result.returncode == 2, result.stderr
    assert "p.yaml:7:" in result.stderr and "unknown check 'made_up_check'" in result.stderr


def test_no_plugins_says_a_plugin_stage_kind_was_not_verified(tmp_path: Path) -> None:
    stage = "{id: s, kind: made_up_kind, output: {a: {type: integer}}}"
    (tmp_path / "p.yaml").write_text(f"pipeline: p\nstages:\n  - {stage}\n")
    result = _cli(tmp_path, "--no-plugins", "p.yaml")
    assert result.returncode == 0, result.stderr
    assert "stage kinds and output_model classes were not imported or verified (--no-plugins" in result.stderr
