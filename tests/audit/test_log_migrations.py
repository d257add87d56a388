"""The decision log's numbered migrations: columns added to files written before them, records kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from steadyflow.audit.log import DecisionLog
from steadyflow.audit.records import Attempt, DecisionRecord

# decisions as the version before queue_ms wrote it (no user_version yet)
_BEFORE_QUEUE = """
CREATE TABLE decisions (
    run_id TEXT NOT NULL, doc_id TEXT NOT NULL, stage_id TEXT NOT NULL, pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL, input_hash TEXT NOT NULL, prompt_version TEXT, status TEXT NOT NULL,
    rung INTEGER, rung_label TEXT, model TEXT, parameters TEXT NOT NULL, review INTEGER NOT NULL, reason TEXT,
    attempts TEXT NOT NULL, n_attempts INTEGER NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL, latency_ms REAL NOT NULL, created_at REAL NOT NULL,
    verdicts TEXT NOT NULL DEFAULT '[]', route TEXT,
    PRIMARY KEY (run_id, doc_id, stage_id)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def test_an_old_store_gets_the_queue_column_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_BEFORE_QUEUE)
    old.execute(
        "INSERT INTO decisions (run_id, doc_id, stage_id, pipeline, pipeline_version, input_hash, status, parameters, "
        "review, attempts, n_attempts, tokens_in, tokens_out, cost_usd, latency_ms, created_at) "
        "VALUES ('r0', 'k', 's', 'p', '1', 'h', 'validated', '{}', 0, '[]', 0, 0, 0, 0, 513000, 0)"
    )
    old.commit()
    old.close()
    store = DecisionLog(path)
    record = DecisionRecord(
        run_id="r1",
        doc_id="d",
        stage_id="s",
        pipeline="p",
        pipeline_version="1",
        input_hash="h",
        prompt_version=None,
        status="validated",
        attempts=[Attempt(rung=0, kind="model", model="m")],
        latency_ms=900.0,
        queue_ms=512_100.0,
    )
    store.add([record])
    assert [(r["latency_ms"], r["queue_ms"]) for r in store.records("r0")] == [(513000, 0)]
    assert [(r["latency_ms"], r["queue_ms"]) for r in store.records("r1")] == [(900.0, 512_100.0)]
    assert [r["confidence"] for r in store.records("r0")] == [None]
    old = store.records("r0")[0]  # the columns the last migration added: an old record has none of them
    assert (old["source_ref"], old["document_hash"], old["outputs"]) == (None, None, None)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 7


def test_a_log_from_before_document_keys_keeps_plain_ids(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_BEFORE_QUEUE.split("CREATE TABLE meta")[0])
    old.close()
    log = DecisionLog(path)
    assert log.key("doc-1") == "doc-1"  # so its runs can still be resumed
    log.close()
    fresh = DecisionLog(tmp_path / "new.sqlite")
    assert fresh.key("doc-1") != "doc-1"
    fresh.close()
