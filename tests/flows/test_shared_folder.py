"""Real runs sharing one output folder, a killed run, a full disk and a read-only folder.

Nothing is lost, nothing is silent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from tests.conftest import ROOT, triage_pipeline

pytestmark = pytest.mark.slow
N = 120


def documents(tmp_path: Path, n: int = N) -> Path:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"doc-{i:03d}", "text": f"ticket {i}: my invoice is wrong"}) + "\n" for i in range(n))
    )
    return docs


def command(pipeline: Path, docs: Path, out: Path, *extra: str) -> list[str]:
    return [
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
        *extra,
    ]


def sink_ids(out: Path, name: str) -> list[str]:
    return [json.loads(line)["id"] for line in (out / name).read_text(encoding="utf-8").splitlines()]


def completed(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM completed").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def wait_for(condition: object, process: subprocess.Popen[bytes], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()[-3000:]
        assert time.monotonic() < deadline, "the run did not get that far in time"
        time.sleep(0.05)


PREFECT_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| WARNING +\| ")


def one_line(stderr: str) -> str:
    """The one line steadyflow printed (besides the run id, and warnings of Prefect's own)."""
    lines = [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("run ") and not PREFECT_LOG.match(line)
    ]
    assert len(lines) == 1 and "Traceback" not in stderr and "INFO" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture
def slow_endpoint() -> ChaosServer:
    server = ChaosServer(ChaosConfig(seed=3, latency_ms=250)).start()  # 120 documents, 2 at a time: ~15 s
    yield server  # type: ignore[misc]
    server.stop()


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_is_intact(
    prefect_env: dict[str, str], tmp_path: Path, slow_endpoint: ChaosServer
) -> None:
    pipeline = triage_pipeline(
        tmp_path / "p.yaml", "shared", slow_endpoint.base_url, "run: {concurrency: 2, chunk_size: 10}"
    )
    docs, out = documents(tmp_path), tmp_path / "out"
    first = subprocess.Popen(
        command(pipeline, docs, out), cwd=ROOT, env=prefect_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: completed(out / "runs.sqlite") >= 10, first)
    second = subprocess.run(
        command(pipeline, docs, out), cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=120
    )
    assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    assert second.returncode == 2
    assert "is in use by run" in one_line(second.stderr)
    assert first.wait(300) == 0
    assert sorted(sink_ids(out, "shared.jsonl")) == [f"doc-{i:03d}" for i in range(N)]


def test_a_killed_run_keeps_its_outputs_from_a_second_run_and_resumes_cleanly(
    prefect_env: dict[str, str], tmp_path: Path, slow_endpoint: ChaosServer
) -> None:
    pipeline = triage_pipeline(
        tmp_path / "p.yaml", "shared", slow_endpoint.base_url, "run: {concurrency: 8, chunk_size: 10}"
    )
    docs, out = documents(tmp_path), tmp_path / "out"
    cmd = command(pipeline, docs, out)
    first = subprocess.Popen(
        cmd, cwd=ROOT, env=prefect_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    wait_for(lambda: completed(out / "runs.sqlite") >= 30, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    kept = (out / "shared.jsonl").read_bytes()
    second = subprocess.run(cmd, cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "which did not finish; resume it with --resume" in one_line(second.stderr)
    assert (out / "shared.jsonl").read_bytes() == kept
    resumed = subprocess.run(
        [*cmd, "--resume", "last"], cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    data = (out / "shared.jsonl").read_bytes()
    assert b"\x00" not in data
    assert sorted(sink_ids(out, "shared.jsonl")) == [f"doc-{i:03d}" for i in range(N)]


def _in_mount_namespace(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace, where it may mount a small or read-only tmpfs."""
    if shutil.which("unshare") is None:
        pytest.fail("util-linux's unshare is needed to give a run a full or read-only disk")
    return subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-ec", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_full_disk_is_one_line_and_a_resume_completes(prefect_env: dict[str, str], tmp_path: Path) -> None:
    server = ChaosServer(ChaosConfig(seed=4)).start()
    try:
        pipeline = triage_pipeline(
            tmp_path / "p.yaml", "shared", server.base_url, "run: {concurrency: 8, chunk_size: 20}"
        )
        docs, out = documents(tmp_path, 2000), tmp_path / "out"
        out.mkdir()
        run = " ".join(command(pipeline, docs, out))
        # 320 KB hold the decision log and the run ledger (each with its WAL index) and the first chunks, not 2,000
        # rows: the disk fills mid-batch
        script = (
            f"mount -t tmpfs -o size=320k tmpfs {out}\n"
            f"set +e; {run} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc; set -e\n"
            f"mount -o remount,size=50m {out}\n"
            f"{run} --resume last 2> {tmp_path}/resume.err; echo $? > {tmp_path}/resume.rc\n"
            f"cp {out}/shared.jsonl {tmp_path}/kept.jsonl\n"
        )
        result = _in_mount_namespace(script, prefect_env)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", full_err[-3000:]
    line = one_line(full_err)
    assert "No space left on device" in line or "database or disk is full" in line, line
    assert "--resume" in line
    assert (tmp_path / "resume.rc").read_text().strip() == "0", (tmp_path / "resume.err").read_text()[-3000:]
    assert sorted(sink_ids(tmp_path, "kept.jsonl")) == sorted(f"doc-{i:03d}" for i in range(2000))


def test_a_read_only_output_folder_is_one_line(prefect_env: dict[str, str], tmp_path: Path) -> None:
    pipeline = triage_pipeline(tmp_path / "p.yaml", "shared", "http://127.0.0.1:1/v1")
    docs, out = documents(tmp_path, 3), tmp_path / "out"
    out.mkdir()
    script = f"mount -t tmpfs -o ro tmpfs {out}\n{' '.join(command(pipeline, docs, out))}\n"
    result = _in_mount_namespace(script, prefect_env)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "Read-only file system" in line and "nothing was written" in line and "--resume" not in line
