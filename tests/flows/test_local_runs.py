"""`steadyflow run` on the embedded local model: end to end, under load, and however the run ends."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steadyflow.providers.local_server import answers
from tests.conftest import ROOT, host_children, running, wait_gone

pytestmark = pytest.mark.slow
TICKETS = ROOT / "configs/data/tickets"
TRANSPORT_ERRORS = {
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "empty_response",
    "client_error",
    "unknown",
}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "steadyflow.cli", "run", "configs/support_triage.yaml", "--json", *args]


def _tickets(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes((TICKETS / name).read_bytes())
    return folder


def test_the_example_runs_end_to_end_on_the_local_model(
    prefect_env: dict[str, str], tmp_path: Path, local_gguf: Path
) -> None:
    docs = _tickets(tmp_path / "in", ["t01.txt", "t02.txt", "t05.txt", "m01_empty.txt"])
    env = {**prefect_env, "OPENAI_API_KEY": "", "STEADYFLOW_CACHE_DIR": str(local_gguf.parents[1])}
    result = subprocess.run(
        _command("--input", str(docs), "--output", str(tmp_path / "out")),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == 4 and summary["outputs"] == 3 and summary["quarantined"] == 1
    [note] = [n for n in summary["notes"] if "started a local model server at " in n]
    assert not answers(note.rsplit(" ", 1)[-1], 2)  # the run stopped its server when it ended
    rows = [json.loads(line) for line in (tmp_path / "out/support_triage.jsonl").read_text().splitlines()]
    assert {r["outputs"]["triage"]["category"] for r in rows} <= {"billing", "technical", "account", "shipping"}
    db = sqlite3.connect(tmp_path / "out/decisions.sqlite")
    models = {m for (m,) in db.execute("SELECT model FROM decisions WHERE status != 'quarantined'")}
    assert models == {local_gguf.name}  # the record names the exact GGUF (its hash is in the name)


def test_fifty_documents_at_concurrency_8_queue_for_the_single_slot(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    good = sorted(p.name for p in TICKETS.glob("t*.*"))
    docs = tmp_path / "docs.jsonl"
    with docs.open("w") as out:
        for i in range(50):
            text = (TICKETS / good[i % len(good)]).read_text()
            out.write(json.dumps({"id": f"doc-{i:02d}", "text": text}) + "\n")
    result = subprocess.run(
        _command("--input", str(docs), "--output", str(tmp_path / "out"), "--concurrency", "8"),
        cwd=ROOT,
        env=prefect_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == 50 and summary["quarantined"] == 0
    db = sqlite3.connect(tmp_path / "out/decisions.sqlite")
    kinds = [a.get("error_kind") for (raw,) in db.execute("SELECT attempts FROM decisions") for a in json.loads(raw)]
    assert len(kinds) >= 50 and not TRANSPORT_ERRORS & set(kinds), kinds  # nothing busy, refused or timed out
    assert summary["by_rung"]["triage"].get("model:small", 0) >= 40


def _decided(db: Path) -> int:
    """Decision records stored so far (0 before the run made its store); read-only, so nothing is created."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_no_orphan_server_however_the_run_ends(prefect_env: dict[str, str], tmp_path: Path, how: str) -> None:
    docs = _tickets(tmp_path / "in", sorted(p.name for p in TICKETS.glob("t*.*"))[:20])
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        _command("--input", str(docs), "--output", str(tmp_path / "out")),
        cwd=ROOT,
        env=prefect_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while not (children := host_children(run.pid)):
        assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-2000:]
        time.sleep(0.2)
    [server] = children
    decisions = tmp_path / "out/decisions.sqlite"
    while not _decided(decisions):  # inside the batch: the server has answered a document and has more to do
        assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-2000:]
        time.sleep(0.2)
    assert run.poll() is None and running(server)
    run.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    code = run.wait(60)
    assert code == (130 if how == "ctrl-c" else -signal.SIGKILL)
    assert wait_gone(server, 15), f"server {server} outlived the run"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steadyflow.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_served_model_is_reused_by_runs_and_stopped_on_request(
    prefect_env: dict[str, str], tmp_path: Path, local_gguf: Path
) -> None:
    env = {**prefect_env, "STEADYFLOW_CACHE_DIR": str(tmp_path / "cache")}
    served = _cli(env, "local-model", "serve", "--model-path", str(local_gguf))
    assert served.returncode == 0, served.stderr
    try:
        info = json.loads(_cli(env, "local-model", "info", "--json").stdout)
        server = info["server"]
        assert server and server["model_path"] == str(local_gguf) and running(server["pid"])
        docs = _tickets(tmp_path / "in", ["t01.txt", "t02.txt"])
        run = _cli(
            env,
            "run",
            "configs/support_triage.yaml",
            "--json",
            "--input",
            str(docs),
            "--output",
            str(tmp_path / "out"),
            "--set",
            f"models.small.model_path={local_gguf}",
        )
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["outputs"] == 2 and summary["notes"] == [
            f"small: reusing the served local model at {server['base_url']}"
        ]
        assert running(server["pid"])  # the run left the shared server running
    finally:
        stopped = _cli(env, "local-model", "stop")
    assert stopped.returncode == 0 and f"pid {server['pid']}" in stopped.stdout
    assert wait_gone(server["pid"], 15)
    assert json.loads(_cli(env, "local-model", "info", "--json").stdout)["server"] is None
    assert "no local model server was running" in _cli(env, "local-model", "stop").stdout
