"""A folder written before the store split (tests/fixtures/stores/make_pre_split.py).

It is reported as it is, then migrated and resumed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

from steadyflow.audit.ledger import LEDGER_NAME, RunLedger, open_ledger
from steadyflow.audit.log import DecisionLog
from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions, check_resume, spec_hash
from steadyflow.spec.loader import load_pipeline
from tests.conftest import BIN, ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "stores" / "pre_split"
MADE_IN = "/tmp/steadyflow-pre-split"


def copy(tmp_path: Path) -> Path:
    """The fixture's folder in tmp_path, with the sink paths it recorded moved along."""
    folder = tmp_path / "pre_split"
    shutil.copytree(FIXTURE, folder)
    # the fingerprint is of the pipeline as this version's spec models dump it (a new field with a default changes it)
    fingerprint = spec_hash(load_pipeline(folder / "pipeline.yaml"))
    db = sqlite3.connect(folder / "out" / "decisions.sqlite")
    with db:
        db.execute("UPDATE sink_files SET path = replace(path, ?, ?)", (MADE_IN, str(folder.resolve())))
        db.execute("UPDATE runs SET spec_hash = ?", (fingerprint,))
    db.close()
    return folder


def digest(folder: Path) -> str:
    """The folder's data; not SQLite's shared-memory index and empty WAL, which any reader of a WAL file creates."""
    files = sorted(p for p in (folder / "out").iterdir() if not p.name.endswith(("-shm", "-wal")))
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def report(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "steadyflow"), "report", *args, "--db", str(db), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_report_reads_an_unmigrated_folder_and_writes_nothing(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    before = digest(folder)
    finished, interrupted = (
        report(folder / "out" / "decisions.sqlite", "finished0001"),
        report(folder / "out" / "decisions.sqlite", "interrupt0001"),
    )
    assert finished.returncode == 0 and interrupted.returncode == 0, finished.stderr + interrupted.stderr
    assert json.loads(finished.stdout)["documents"] == 30
    total = json.loads(interrupted.stdout)["total"]
    assert total["usd_interrupted"] == 0.015  # the superseded rows, read where they are
    assert digest(folder) == before and not (folder / "out" / LEDGER_NAME).exists()


def test_opening_the_folder_moves_the_run_tables_once_and_keeps_the_salt(tmp_path: Path) -> None:
    folder = copy(tmp_path) / "out"
    with sqlite3.connect(folder / "decisions.sqlite") as db:
        salt = db.execute("SELECT value FROM meta").fetchone()[0]
        counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "completed", "superseded")}
    log = DecisionLog(folder / "decisions.sqlite")
    ledger = open_ledger(folder, log)
    assert not log.has_run_tables()
    assert log.key("doc-00") == _hmac(salt, "doc-00")  # the documents keep their keys
    assert ledger.completed_keys("interrupt0001") >= {log.key("doc-00")}
    assert round(ledger.interrupted("interrupt0001")[0], 6) == 0.015
    ledger.close()
    again = open_ledger(folder, log)  # a second open (or one after a crash between copy and drop) changes nothing
    with sqlite3.connect(folder / LEDGER_NAME) as db:
        assert {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in counts} == counts
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    again.close()
    log.close()


def test_a_crash_between_copy_and_drop_is_repaired_by_the_next_open(tmp_path: Path) -> None:
    folder = copy(tmp_path) / "out"
    ledger = RunLedger(folder / LEDGER_NAME)
    ledger.import_pre_split(folder / "decisions.sqlite")  # ... and the process died before the log dropped its tables
    ledger.close()
    log = DecisionLog(folder / "decisions.sqlite")
    ledger = open_ledger(folder, log)
    with sqlite3.connect(folder / "decisions.sqlite") as db:
        superseded = db.execute("SELECT name FROM sqlite_master WHERE name = 'superseded'").fetchone()
    assert superseded is None and round(ledger.interrupted("interrupt0001")[0], 6) == 0.015  # not counted twice
    ledger.close()
    log.close()


def test_the_interrupted_run_resumes_after_the_migration(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    pipeline = load_pipeline(folder / "pipeline.yaml")
    options = RunOptions(run_id="last", resume=True)
    check_resume(pipeline, options)  # read-only: finds the unfinished run in the old tables
    assert options.run_id == "interrupt0001" and not (folder / "out" / LEDGER_NAME).exists()
    summary = run_local(pipeline, options)
    assert summary.resumed == 20 and summary.documents == 10
    ids = [json.loads(line)["id"] for line in (folder / "out" / "tickets.jsonl").read_text().splitlines()]
    assert sorted(ids) == [f"doc-{i:02d}" for i in range(30)]  # each document exactly once
    result = report(folder / "out" / "decisions.sqlite", "interrupt0001")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["documents"] == 30 and data["total"]["usd_interrupted"] >= 0.015
    with sqlite3.connect(folder / "out" / LEDGER_NAME) as db:
        assert db.execute("SELECT finished_at IS NOT NULL FROM runs WHERE run_id = 'interrupt0001'").fetchone() == (1,)


def _hmac(salt: str, doc_id: str) -> str:
    import hmac

    return hmac.new(bytes.fromhex(salt), doc_id.encode(), hashlib.sha256).hexdigest()[:24]
