"""Hostile documents through whole batches: every entry ends exactly once, in the sink or the quarantine, with records.

The property test drives the batch without Prefect (``run_batch`` with the engine as its stage
runner) over folders hypothesis makes up; the soak test runs the CLI on a real Prefect server
with 30% faults, two kills, two resumes and a second run that is refused.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.io.sources import count_documents, source_for
from steadyflow.runner.run import RunOptions
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.loader import load_pipeline
from tests.conftest import ROOT, batch_without_prefect
from tests.flows.test_prefect import THIRTY_PERCENT
from tests.io.hostile_files import bomb_pdf, deep_json, text_pdf

PIPELINE = """
pipeline: hostile
models:
  m: {{provider: openai, base_url: "{base_url}", timeout_s: {timeout_s}}}
stages:
  - id: triage
    kind: ai
    input: {{max_chars: 4000}}
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}, note: {{type: string, max_length: 80}}}}
    ladder:
      - {{model: m, retries: 1}}
      - {{default: {{category: billing, note: "needs a person"}}, review: true}}
sink: {{kind: {sink}, path: out.{sink}}}
run: {{concurrency: 8, chunk_size: 7}}
"""

HOSTILE: dict[str, bytes] = {
    "deep.json": deep_json(5000).encode(),
    "bigint.json": b'{"text": ' + b"9" * 5000 + b"}",
    "surrogate.json": b'{"text": "a \\ud800 b"}',
    "nul.txt": b"before\x00after",
    "latin1.txt": "caf\xe9".encode("latin-1"),
    "empty.txt": b"",
    "bomb.pdf": bomb_pdf(50_000_000),
    "ok.pdf": text_pdf(["My invoice is wrong"]),
    "page.html": b"<html><script>alert(1)</script><p>the app crashes</p></html>",
    "mail.eml": b"Subject: refund\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nplease refund",
}


def _write_entry(folder: Path, name: str, kind: str, content: bytes) -> None:
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "link_out":
        path.symlink_to("/etc/hostname")
    else:
        path.write_bytes(content)


_entries = st.lists(
    st.tuples(
        st.sampled_from(["txt", "json", "md", "html", "eml", "pdf"]),
        st.sampled_from(["file", "file", "file", "fifo", "dir", "link_out"]),
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from(list(HOSTILE.values())),
            st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
        ),
    ),
    min_size=1,
    max_size=12,
)


def _batch(pipeline_file: Path, folder: Path, out: Path) -> RunSummary:
    """One run of the batch without Prefect: the lock, the store, the engine as stage runner."""
    pipeline = load_pipeline(pipeline_file)
    options = RunOptions(input=str(folder), output=str(out))

    summary: RunSummary = batch_without_prefect(pipeline, options)
    return summary


def _accounted(out: Path, sink: str) -> tuple[list[str], list[str]]:
    """Ids in the sink and in the quarantine; every line must parse."""
    if sink == "csv":
        with (out / "out.csv").open(newline="", encoding="utf-8") as handle:
            outputs = [row["id"] for row in csv.DictReader(handle)]
    else:
        outputs = [json.loads(line)["id"] for line in (out / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    held = [json.loads(line)["id"] for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    return outputs, held


@pytest.fixture(scope="module")
def faulty_endpoint() -> Iterator[ChaosServer]:
    faults = {k: v for k, v in THIRTY_PERCENT.items() if k != "timeout"}  # hangs belong in the soak test
    server = ChaosServer(ChaosConfig(faults=faults, seed=13, retry_after_s=0.01)).start()
    yield server
    server.stop()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(entries=_entries, sink=st.sampled_from(["jsonl", "csv"]))
def test_any_folder_ends_with_every_entry_exactly_once(
    faulty_endpoint: ChaosServer, entries: list[tuple[str, str, bytes]], sink: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder, out = base / "in", base / "out"
        folder.mkdir()
        for i, (suffix, kind, content) in enumerate(entries):
            _write_entry(folder, f"e{i:02d}.{suffix}", kind, content)
        pipeline_file = base / "p.yaml"
        pipeline_file.write_text(PIPELINE.format(base_url=faulty_endpoint.base_url, timeout_s=5, sink=sink))
        summary = _batch(pipeline_file, folder, out)
        outputs, held = _accounted(out, sink)
        assert sorted(outputs + held) == sorted(f"e{i:02d}.{s}" for i, (s, _, _) in enumerate(entries))
        assert summary.documents == len(entries)
        with sqlite3.connect(out / "decisions.sqlite") as db:
            assert db.execute("SELECT COUNT(DISTINCT doc_id) FROM decisions").fetchone()[0] == len(entries)


_lines = st.lists(
    st.one_of(
        st.builds(
            lambda i, t: json.dumps({"id": i, "text": t}),
            st.sampled_from(["x", "x", "x~2", "", " x", "0"]),
            st.text(max_size=40),
        ),
        st.sampled_from(
            [deep_json(3000), '{"id": 1, "text": ' + "9" * 5000 + "}", '{"text": "\\ud800"}', "[1, 2]", "not json", ""]
        ),
        st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    ),
    min_size=1,
    max_size=15,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(lines=_lines, kind=st.sampled_from(["jsonl", "csv"]))
def test_any_table_ends_with_every_record_exactly_once(
    faulty_endpoint: ChaosServer, lines: list[str], kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        table, out = base / f"in.{kind}", base / "out"
        body = "\n".join(lines) if kind == "jsonl" else "id,text\n" + "\n".join(lines)
        table.write_bytes(body.encode("utf-8", "surrogatepass"))
        expected = count_documents(source_for(str(table)), base)
        pipeline_file = base / "p.yaml"
        pipeline_file.write_text(PIPELINE.format(base_url=faulty_endpoint.base_url, timeout_s=5, sink="jsonl"))
        summary = _batch(pipeline_file, table, out)
        outputs, held = _accounted(out, "jsonl")
        assert len(outputs) + len(held) == expected == summary.documents
        assert len(set(outputs + held)) == expected  # ids made unique never collide


# ---- soak: the CLI on a real Prefect server ---------------------------------------------------

N_PLAIN = 300


def _soak_folder(folder: Path) -> list[str]:
    """300 plain tickets and every hostile kind; the ids the run must account for."""
    folder.mkdir()
    topics = ["my invoice is wrong", "the app crashes", "cannot log in", "parcel lost", "pricing question"]
    for i in range(N_PLAIN):
        (folder / f"t{i:03d}.txt").write_text(f"Ticket {i}: {topics[i % 5]}")
    for name, content in HOSTILE.items():
        (folder / name).write_bytes(content)
    os.mkfifo(folder / "pipe.txt")
    (folder / "folder.txt").mkdir()
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    return sorted([*(f"t{i:03d}.txt" for i in range(N_PLAIN)), *HOSTILE, "pipe.txt", "folder.txt", "passwd.txt"])


def _completed(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM completed").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _kill_after(cmd: list[str], env: dict[str, str], db: Path, after: int) -> None:
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while _completed(db) < after:
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()[-3000:]
        assert time.monotonic() < deadline, "the run did not get far enough"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


@pytest.mark.slow
def test_soak_hostile_documents_faults_kills_and_a_second_run(prefect_env: dict[str, str], tmp_path: Path) -> None:
    expected = _soak_folder(tmp_path / "in")
    out = tmp_path / "out"
    server = ChaosServer(
        ChaosConfig(faults=THIRTY_PERCENT, seed=17, hang_s=3, latency_ms=20, retry_after_s=0.1)
    ).start()
    try:
        pipeline_file = tmp_path / "p.yaml"
        pipeline_file.write_text(PIPELINE.format(base_url=server.base_url, timeout_s=1, sink="jsonl"))
        cmd = [
            sys.executable,
            "-m",
            "steadyflow.cli",
            "run",
            str(pipeline_file),
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--quiet",
        ]
        db = out / "runs.sqlite"
        _kill_after(cmd, prefect_env, db, after=80)
        _kill_after([*cmd, "--resume", "last"], prefect_env, db, after=200)
        # the last attempt must still run when the second run arrives: slow, and without faults (with them its breaker
        # opens and every remaining document falls to the default rung at once)
        server.config.latency_ms, faults = 800, server.config.faults  # under the model's 1 s timeout
        server.config.faults = {}
        last = subprocess.Popen(
            [*cmd, "--resume", "last", "--json"],
            cwd=ROOT,
            env=prefect_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        while f'"pid": {last.pid},' not in (out / ".steadyflow.lock").read_text():  # the resumed run holds the folder
            assert last.poll() is None, (last.stderr.read() if last.stderr else b"").decode()[-3000:]
            time.sleep(0.05)
        second = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=120)
        assert last.poll() is None, "the resumed run ended before the second run started: the test proves nothing"
        server.config.latency_ms, server.config.faults = 20, faults
        _, stderr = last.communicate(timeout=600)
    finally:
        server.stop()
    assert second.returncode == 2 and "is in use by run" in second.stderr and "Traceback" not in second.stderr
    assert last.returncode == 0, stderr.decode()[-3000:]
    outputs, held = _accounted(out, "jsonl")
    assert sorted(outputs + held) == expected  # every document exactly once, in a parseable sink
    with sqlite3.connect(out / "decisions.sqlite") as connection:
        assert connection.execute("SELECT COUNT(DISTINCT doc_id) FROM decisions").fetchone()[0] == len(expected)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()[0] == 1
    reasons = {
        json.loads(line)["id"]: json.loads(line)["reason"]
        for line in (out / "quarantine.jsonl").read_text().splitlines()
    }
    assert "not a regular file: FIFO" in reasons["pipe.txt"] and "leaves the input folder" in reasons["passwd.txt"]
    assert b"root:" not in b"".join(json.dumps(body).encode() for body in server.requests)  # /etc/passwd never sent
