"""Resume, exactly once: a real run killed with SIGKILL mid-batch, twice, then finished with --resume."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
N = 400


def pipeline_file(folder: Path, base_url: str, sink: str) -> Path:
    path = folder / "resumable.yaml"
    path.write_text(f"""
pipeline: resumable
models:
  m: {{provider: openai, base_url: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage this ticket: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical, account]}}, summary: {{type: string}}}}
    ladder: [{{model: m}}]
sink: {sink}
run: {{concurrency: 8, chunk_size: 10}}
""")
    return path


def completed(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as connection:
        try:
            return {row[0] for row in connection.execute("SELECT doc_id FROM completed")}
        except sqlite3.OperationalError:  # the run has not created its tables yet
            return set()


def asked_since(server: ChaosServer, start: int) -> set[str]:
    """Documents the model was asked about (each request's ticket id) since request number ``start``."""
    ids: set[str] = set()
    for body in list(server.requests)[start:]:
        ids.update(re.findall(r"Ticket (doc-\d{3})", json.dumps(body["messages"]))[:1])
    return ids


def run_until_killed(cmd: list[str], env: dict[str, str], db: Path, after: int) -> None:
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while len(completed(db)) < after:
        assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
        assert time.monotonic() < deadline, "the run did not get far enough"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the run and everything it started, no chance to clean up
    process.wait(30)


def sink_ids(sink_kind: str, out: Path, url: str, table: str) -> list[str]:
    if sink_kind == "jsonl":
        return [json.loads(line)["id"] for line in (out / "resumable.jsonl").read_text().splitlines()]
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(sa.text(f"SELECT doc_id FROM {table}"))]
    engine.dispose()
    return ids


@pytest.fixture(params=["jsonl", "sqlite", "postgresql"])
def sink_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_killed_twice_then_resumed_every_document_once_and_no_model_call_repeated(
    prefect_env: dict[str, str], tmp_path: Path, sink_kind: str, request: pytest.FixtureRequest
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"id": f"doc-{i:03d}", "text": f"Ticket doc-{i:03d}: my invoice is wrong"}) + "\n"
            for i in range(N)
        )
    )
    out = tmp_path / "out"
    table = f"resume_{uuid.uuid4().hex[:8]}"  # PostgreSQL outlives one test
    url = (
        request.getfixturevalue("postgres_url")
        if sink_kind == "postgresql"
        else f"sqlite:///{tmp_path / 'sink.sqlite'}"
    )
    sink = (
        "{kind: jsonl, path: out/resumable.jsonl}"
        if sink_kind == "jsonl"
        else f'{{kind: sql, url: "{url}", table: {table}, outside_output: true}}'
    )
    server = ChaosServer(ChaosConfig(seed=5, latency_ms=60, keep_requests=100_000)).start()
    try:
        pipeline = pipeline_file(tmp_path, server.base_url, sink)
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
            "--quiet",
        ]
        db, ledger = out / "decisions.sqlite", out / "runs.sqlite"
        run_until_killed(cmd, prefect_env, ledger, after=80)
        with sqlite3.connect(ledger) as connection:
            run_id = connection.execute("SELECT run_id FROM runs").fetchone()[0]
        key = DecisionLog(db, readonly=True).key  # the folder knows documents by a keyed hash of their id
        for kill_after in (220, None):
            done_before = completed(ledger)
            asked_before = len(server.requests)
            resume = [*cmd, "--resume", run_id]
            if kill_after is not None:
                run_until_killed(resume, prefect_env, ledger, after=kill_after)
            else:
                result = subprocess.run(
                    [*resume[:-3], "--json", "--resume", "last"],
                    cwd=ROOT,
                    env=prefect_env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert result.returncode == 0, result.stderr[-3000:]
                summary = json.loads(result.stdout.strip().splitlines()[-1])
                assert summary["run_id"] == run_id and summary["resumed"] == len(done_before)
                assert summary["documents"] == N - len(done_before)
            asked_again = {key(doc_id) for doc_id in asked_since(server, asked_before)}
            assert asked_again, "the resumed run asked nothing"
            assert done_before, "nothing was completed before the kill"
            assert not asked_again & done_before, "a completed document went to the model again"
    finally:
        server.stop()
    ids = sink_ids(sink_kind, out, url, table)
    assert sorted(ids) == [f"doc-{i:03d}" for i in range(N)]  # every document, exactly once
    with sqlite3.connect(db) as connection:
        assert (
            connection.execute("SELECT COUNT(DISTINCT doc_id) FROM decisions WHERE run_id = ?", (run_id,)).fetchone()[0]
            == N
        )
    with sqlite3.connect(ledger) as connection:
        assert (
            connection.execute("SELECT finished_at IS NOT NULL FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
            == 1
        )


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Ticket doc-001: hello"}\n')
    pipeline = pipeline_file(tmp_path, "http://127.0.0.1:1/v1", "{kind: jsonl, path: out/resumable.jsonl}")
    base = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "run",
        str(pipeline),
        "--input",
        str(docs),
        "--output",
        str(tmp_path / "out"),
    ]

    def refused(*args: str) -> str:
        result = subprocess.run([*base, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        return result.stderr.strip()

    assert "no decisions store at" in refused("--resume", "abc")
    DecisionLog(tmp_path / "out" / "decisions.sqlite").close()
    store = RunLedger(tmp_path / "out" / "runs.sqlite")
    store.start_run("old1", "resumable", "0.0.0", None, "not-this-pipeline")
    store.start_run("done1", "resumable", "0.0.0", None, "x")
    store.finish_run("done1", {})
    store.close()
    assert "has no such run (newest: " in refused("--resume", "abc")
    assert "the pipeline changed since that run started" in refused(
        "--resume", "last"
    )  # last = old1, which another pipeline made
    store = RunLedger(tmp_path / "out" / "runs.sqlite")
    store.finish_run("old1", {})
    store.close()
    assert "no unfinished run of resumable" in refused("--resume", "last")
