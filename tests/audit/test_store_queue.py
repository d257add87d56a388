"""queue_ms: a column of its own, added to stores written before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from steadyflow.audit.records import Attempt, DecisionRecord
from steadyflow.audit.store import _SCHEMA, DecisionStore


def test_an_old_store_gets_the_queue_column_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA.replace("    queue_ms REAL NOT NULL DEFAULT 0,\n", ""))
    old.execute(
        "INSERT INTO decisions (run_id, doc_id, stage_id, pipeline, pipeline_version, input_hash, status, parameters, review, "
        "attempts, n_attempts, tokens_in, tokens_out, cost_usd, latency_ms, created_at) "
        "VALUES ('r0', 'k', 's', 'p', '1', 'h', 'validated', '{}', 0, '[]', 0, 0, 0, 0, 513000, 0)"
    )
    old.commit()
    old.close()
    store = DecisionStore(path)
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
    store.close()
