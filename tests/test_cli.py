"""The CLI as a user runs it: exit codes, one line per problem, no traceback, fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "steadyflow.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_validate_ok_exits_0() -> None:
    result = _cli("validate", "configs/support_triage.yaml")
    assert result.returncode == 0, result.stderr


def test_validate_broken_files_exits_2_with_one_line_per_problem_and_no_traceback() -> None:
    files = ["tests/fixtures/invalid/misspelt_stage_key.yaml", "tests/fixtures/invalid/python_tag.yaml"]
    result = _cli("validate", "configs/support_triage.yaml", *files)
    assert result.returncode == 2
    expected = "".join((ROOT / f).with_suffix(".expected").read_text() for f in files)
    assert result.stderr == expected
    assert "Traceback" not in result.stderr


def test_schema_is_json() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "Pipeline"


def test_validate_and_help_do_not_import_prefect() -> None:
    code = "import sys; from typer.testing import CliRunner; from steadyflow.cli import app; " \
           "CliRunner().invoke(app, ['validate', 'configs/support_triage.yaml']); CliRunner().invoke(app, ['--help']); " \
           "print('prefect' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_run_with_a_broken_file_exits_2() -> None:
    result = _cli("run", "tests/fixtures/invalid/unknown_model_in_ladder.yaml")
    assert result.returncode == 2 and "unknown model 'fats'" in result.stderr
