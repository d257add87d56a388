"""`steadyflow run` output: a progress bar with docs/s, ETA and counts per rung; --quiet and --json for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from tests.conftest import ROOT, triage_pipeline

pytestmark = pytest.mark.slow


def _run(env: dict[str, str], pipeline: Path, docs: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "run",
        str(pipeline),
        "--input",
        str(docs),
        "--output",
        str(out),
        "--chunk-size",
        "20",
        *flags,
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_progress_bar_quiet_and_json(prefect_env: dict[str, str], chaos: ChaosServer, tmp_path: Path) -> None:
    pipeline = triage_pipeline(tmp_path / "p.yaml", "progress", chaos.base_url)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": f"ticket {i}"}) + "\n" for i in range(100)) + "{broken\n")
    shown = _run(prefect_env, pipeline, docs, tmp_path / "a")
    bar = [line for line in shown.stderr.splitlines() if "docs/s" in line]
    assert bar, shown.stderr[-2000:]
    assert "101/101" in bar[-1] and "ETA" in bar[-1] and "triage: model:m 100, quarantined 1" in bar[-1]
    assert "resume after a crash with --resume" in shown.stderr
    assert shown.stdout.startswith("run ") and "101 documents -> 100 outputs, 1 quarantined" in shown.stdout

    quiet = _run(prefect_env, pipeline, docs, tmp_path / "b", "--quiet")
    assert "docs/s" not in quiet.stderr and "101 documents -> 100 outputs" in quiet.stdout
    assert "  audit trail: sqlite:///" in quiet.stdout and " (head " in quiet.stdout  # where the trail is
    assert "resume after a crash with --resume" in quiet.stderr
    assert "| INFO " not in quiet.stderr  # issue 12: --quiet still printed Prefect's INFO lines

    as_json = _run(prefect_env, pipeline, docs, tmp_path / "c", "--json")
    assert "docs/s" not in as_json.stderr and "| INFO " not in as_json.stderr
    [line] = as_json.stdout.strip().splitlines()  # stdout is exactly one JSON object
    summary = json.loads(line)
    assert summary["documents"] == 101 and summary["by_rung"] == {"triage": {"model:m": 100, "quarantined": 1}}
    assert summary["audit"]["head_seq"] > 101 and len(summary["audit"]["head_hash"]) == 64
