"""Schedules and deployments on a real Prefect server: `steadyflow serve` and `steadyflow deploy` + a process worker."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import BIN, ROOT, stop, triage_pipeline

pytestmark = pytest.mark.slow


def _pipeline(folder: Path, name: str, base_url: str) -> Path:
    path = triage_pipeline(folder / f"{name}.yaml", name, base_url)
    docs = folder / "docs"
    docs.mkdir(exist_ok=True)
    for i in range(6):
        (docs / f"t{i}.txt").write_text(f"ticket {i}: my invoice is wrong")
    return path


def _api(env: dict[str, str], code: str) -> object:
    """Ask the Prefect API from a fresh interpreter (the test process is not configured for that server)."""
    script = (
        "import asyncio, json\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.exceptions import ObjectNotFound\n" + code
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _deployment(env: dict[str, str], name: str, timeout_s: float = 120) -> dict:
    code = (
        f"""
async def main():
    async with get_client() as client:
        try:
            d = await client.read_deployment_by_name("steadyflow/{name}")
        except ObjectNotFound:
            print(json.dumps(None)); return
        print(json.dumps({{"id": str(d.id), "pool": d.work_pool_name, "entrypoint": d.entrypoint,
                          "crons": [getattr(s.schedule, "cron", None) for s in d.schedules], """
        '"parameters": d.parameters}))\n'
        "asyncio.run(main())\n"
    )
    deadline = time.monotonic() + timeout_s
    while (found := _api(env, code)) is None:
        assert time.monotonic() < deadline, f"deployment steadyflow/{name} never appeared"
        time.sleep(2)
    assert isinstance(found, dict)
    return found


def _run_and_wait(env: dict[str, str], deployment_id: str, timeout_s: float = 300) -> str:
    code = f"""
async def main():
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment("{deployment_id}")
        for _ in range({int(timeout_s)}):
            run = await client.read_flow_run(run.id)
            if run.state and run.state.is_final():
                break
            await asyncio.sleep(1)
        print(json.dumps(run.state.type.value if run.state else None))
asyncio.run(main())
"""
    state = _api(env, code)
    assert isinstance(state, str)
    return state


def _rows(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]


def test_serve_registers_the_cron_schedule_and_runs_the_pipeline(
    prefect_env: dict[str, str], tmp_path: Path, audit_store: Path
) -> None:
    server = ChaosServer(ChaosConfig(seed=21)).start()
    pipeline = _pipeline(tmp_path, "served", server.base_url)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "serve",
        str(pipeline),
        "--cron",
        "0 3 * * *",
        "--input",
        str(tmp_path / "docs"),
        "--output",
        str(out),
    ]
    env = {**prefect_env, "STEADYFLOW_AUDIT_URL": f"sqlite:///{audit_store}"}
    serving = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=(tmp_path / "serve.log").open("w"), stderr=subprocess.STDOUT
    )
    try:
        deployment = _deployment(prefect_env, "served")
        assert deployment["crons"] == ["0 3 * * *"]
        assert deployment["entrypoint"] == "steadyflow.flows.deploy.pipeline_run"
        assert deployment["parameters"]["pipeline_file"] == str(pipeline.resolve())
        assert _run_and_wait(prefect_env, deployment["id"]) == "COMPLETED"
    finally:
        stop(serving)
        server.stop()
    rows = _rows(out, "served")
    assert sorted(r["id"] for r in rows) == [f"t{i}.txt" for i in range(6)]
    # the audit trail says which deployment and flow run decided each document
    with sqlite3.connect(audit_store) as db:
        actors = {
            row[0]
            for row in db.execute("SELECT json_extract(payload, '$.actor') FROM audit_records WHERE kind = 'decision'")
        }
    (actor,) = [json.loads(text) for text in actors]
    assert actor["prefect_deployment"] == "served" and actor["prefect_flow_run"]


def test_deploy_to_a_work_pool_runs_on_a_process_worker(prefect_env: dict[str, str], tmp_path: Path) -> None:
    server = ChaosServer(ChaosConfig(seed=22)).start()
    pipeline = _pipeline(tmp_path, "deployed", server.base_url)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "deploy",
        str(pipeline),
        "--pool",
        "batch-pool",
        "--cron",
        "30 1 * * 1-5",
        "--input",
        str(tmp_path / "docs"),
        "--output",
        str(out),
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=prefect_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "work pool 'batch-pool'" in result.stdout
    deployment = _deployment(prefect_env, "deployed", timeout_s=10)
    assert deployment["pool"] == "batch-pool" and deployment["crons"] == ["30 1 * * 1-5"]
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "batch-pool"],
        cwd=tmp_path,
        env=prefect_env,
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert _run_and_wait(prefect_env, deployment["id"]) == "COMPLETED"
    finally:
        stop(worker)
        server.stop()
    rows = _rows(out, "deployed")
    assert sorted(r["id"] for r in rows) == [f"t{i}.txt" for i in range(6)]
    assert {r["rungs"]["triage"] for r in rows} == {"model:m"}


def test_a_bad_cron_is_refused_before_anything_is_created(prefect_env: dict[str, str], tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "badcron", "http://127.0.0.1:1/v1")
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "serve",
        str(pipeline),
        "--cron",
        "every day",
        "--input",
        str(tmp_path / "docs"),
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not a cron expression" in result.stderr and "Traceback" not in result.stderr
