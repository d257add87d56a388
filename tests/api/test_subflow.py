"""Pipeline.run inside a user's own Prefect flow: the pipeline's flow is a subflow of it, on a real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from steadyflow.chaos.server import ChaosServer
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

USER_FLOW = """
import asyncio, json, sys
from prefect import flow
from prefect.runtime import flow_run
import steadyflow

pipeline = steadyflow.load(sys.argv[1], ["models.small.provider=openai", "models.small.base_url=" + sys.argv[2]])

@flow(name="nightly-tickets")
def nightly(folder: str, out: str) -> dict:
    summary = pipeline.run(input=folder, output=out)
    return {"parent": flow_run.get_id(), "summary": summary.as_json()}

@flow(name="nightly-tickets-async")
async def nightly_async(folder: str, out: str) -> dict:
    summary = await pipeline.arun(input=folder, output=out)
    return {"parent": flow_run.get_id(), "summary": summary.as_json()}

print(json.dumps([nightly(sys.argv[3], sys.argv[4]), asyncio.run(nightly_async(sys.argv[3], sys.argv[5]))]))
"""


def _api(env: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        env["PREFECT_API_URL"] + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_user_flow_runs_a_pipeline_as_its_subflow(
    prefect_env: dict[str, str], chaos: ChaosServer, tmp_path: Path
) -> None:
    folder = tmp_path / "tickets"
    folder.mkdir()
    for name in ("t01.txt", "t02.txt", "t03.txt"):
        (folder / name).write_bytes((ROOT / "configs" / "data" / "tickets" / name).read_bytes())
    script = tmp_path / "user_flow.py"
    script.write_text(USER_FLOW)
    outs = [tmp_path / "out-sync", tmp_path / "out-async"]
    cmd = [sys.executable, str(script), str(ROOT / "configs" / "support_triage.yaml"), chaos.base_url, str(folder)]
    result = subprocess.run(
        [*cmd, *map(str, outs)], cwd=tmp_path, env=prefect_env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    for run, out in zip(runs, outs, strict=True):
        summary = run["summary"]
        assert summary["documents"] == 3 and summary["outputs"] + summary["quarantined"] == 3
        assert (out / "support_triage.jsonl").is_file() and summary["flow_run_id"]
        (pipeline_run,) = _api(
            prefect_env, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [summary["flow_run_id"]]}}}
        )
        assert pipeline_run["state_type"] == "COMPLETED"
        # a subflow hangs under a task run of its parent flow run
        assert pipeline_run["parent_task_run_id"], "the pipeline's flow ran as a separate flow, not a subflow"
        (parent_task,) = _api(
            prefect_env, "/task_runs/filter", {"task_runs": {"id": {"any_": [pipeline_run["parent_task_run_id"]]}}}
        )
        assert parent_task["flow_run_id"] == run["parent"]
