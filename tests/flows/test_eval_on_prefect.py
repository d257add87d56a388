"""`steadyflow eval --prefect`: the evaluation runs as a flow on a real Prefect server, its report an artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from tests.conftest import prefect_post, triage_pipeline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_eval_on_prefect_scores_like_eval_and_publishes_its_report(
    tmp_path: Path, chaos: ChaosServer, prefect_env: dict[str, str]
) -> None:
    file = triage_pipeline(tmp_path / "p.yaml", "evalflow", chaos.base_url)
    dataset = tmp_path / "d.jsonl"
    labels = ["billing", "technical", "billing", "billing", "technical"]
    dataset.write_text(
        "".join(
            json.dumps({"id": f"e{i}", "text": f"ticket {i}", "expected": {"category": c}}) + "\n"
            for i, c in enumerate(labels)
        )
    )
    chaos.script.extend([{"content": {"category": "billing"}}] * 5)  # right for 3 of 5
    command = [sys.executable, "-m", "steadyflow.cli", "eval", str(file), "--dataset", str(dataset), "--json"]
    result = subprocess.run(
        [*command, "--prefect", "--chunk-size", "2", "--concurrency", "1"],
        cwd=ROOT,
        env=prefect_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["documents"] == 5 and summary["fields"]["triage.category"]["accuracy"] == 0.6

    api = prefect_env["PREFECT_API_URL"]
    artifacts = prefect_post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["steadyflow-eval-evalflow"]}}})
    assert len(artifacts) == 1 and "| triage.category | exact | 60.0% |" in artifacts[0]["data"]
    assert "ticket 3" not in artifacts[0]["data"]  # ids, labels and scores: never document text
    runs = prefect_post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [artifacts[0]["flow_run_id"]]}}})
    assert sorted(run["name"] for run in runs) == ["eval[0]", "eval[1]", "eval[2]"]
