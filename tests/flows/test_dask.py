"""More than one process: a pipeline on a local Dask cluster of worker processes (prefect-dask)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_stages_run_in_dask_worker_processes_and_every_document_comes_back(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    # a plugin check that notes which process checked each output: it must be the Dask workers, not the flow
    (tmp_path / "where.py").write_text(
        textwrap.dedent("""
        import os
        import dask
        from steadyflow.validators.base import Finding, validator

        @validator("where")
        def where(params, output, context):
            profiling = dask.config.get("distributed.worker.profile.enabled")
            with open(os.environ["WHERE_LOG"], "a") as log:
                log.write(f"{os.getpid()} {context.doc_id} {profiling}\\n")
            return Finding(passed=True)
    """)
    )
    server = ChaosServer(ChaosConfig(seed=31, latency_ms=20)).start()
    pipeline = tmp_path / "spread.yaml"
    pipeline.write_text(f"""
pipeline: spread
plugins: [where]
models:
  m: {{provider: openai, base_url: "{server.base_url}", price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    validate: [{{layer: business, check: where, on_fail: noop}}]
    ladder: [{{model: m}}]
  - id: tag
    kind: ai
    prompt: {{template: "Tag: {{{{ text }}}}"}}
    output: {{tag: {{type: string}}}}
    ladder: [{{model: m}}]
run: {{task_runner: dask, dask_workers: 2, chunk_size: 10, concurrency: 4}}
""")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i:02d}", "text": f"ticket {i}: invoice wrong"}) + "\n" for i in range(60))
        + "not json\n"
    )
    log = tmp_path / "where.log"
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "run",
        str(pipeline),
        "--json",
        "--input",
        str(docs),
        "--output",
        str(tmp_path / "out"),
    ]
    run = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**prefect_env, "WHERE_LOG": str(log)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)  # never leave the run's Dask workers behind
        server.stop()
    assert run.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["documents"] == 61 and summary["outputs"] == 60 and summary["quarantined"] == 1
    assert summary["by_rung"]["triage"] == {"model:m": 60, "quarantined": 1} and summary["by_rung"]["tag"] == {
        "model:m": 60
    }
    assert summary["cost_usd"] > 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "spread.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"d{i:02d}" for i in range(60)]
    assert all(
        set(r["outputs"]) == {"triage", "tag"} for r in rows
    )  # documents came back from the workers with both outputs
    seen = [line.split() for line in log.read_text().splitlines()]
    assert sorted(doc for _, doc, _ in seen) == [f"d{i:02d}" for i in range(60)]
    # the workers' sampling profiler is off: on CPython 3.11 < 3.11.9 it can deadlock a worker (cpython#116969)
    assert {profiling for _, _, profiling in seen} == {"False"}
    pids = {int(pid) for pid, _, _ in seen}
    assert len(pids) == 2 and all(pid != os.getpid() for pid in pids), pids  # two worker processes did the work
