"""SQLite store of runs and decision records (one file per output folder)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from steadyflow.audit.records import DecisionRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    flow_run_id TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    prompt_version TEXT,
    status TEXT NOT NULL,
    rung INTEGER,
    rung_label TEXT,
    model TEXT,
    parameters TEXT NOT NULL,
    review INTEGER NOT NULL,
    reason TEXT,
    attempts TEXT NOT NULL,
    n_attempts INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    created_at REAL NOT NULL,
    verdicts TEXT NOT NULL DEFAULT '[]',
    route TEXT,
    PRIMARY KEY (run_id, doc_id, stage_id)
);
"""


_COLUMNS = (
    "run_id, doc_id, stage_id, pipeline, pipeline_version, input_hash, prompt_version, status, rung, rung_label, model, "
    "parameters, review, reason, attempts, n_attempts, tokens_in, tokens_out, cost_usd, latency_ms, created_at, verdicts, route"
)


class DecisionStore:
    """Append-only store of decision records; safe to share within one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        # stores written by earlier versions lack the newer columns
        if "verdicts" not in columns:
            self._db.execute("ALTER TABLE decisions ADD COLUMN verdicts TEXT NOT NULL DEFAULT '[]'")
        if "route" not in columns:
            self._db.execute("ALTER TABLE decisions ADD COLUMN route TEXT")

    def start_run(self, run_id: str, pipeline: str, version: str, flow_run_id: str | None) -> None:
        """Register a run before any of its records."""
        self._db.execute(
            "INSERT OR REPLACE INTO runs (run_id, pipeline, pipeline_version, flow_run_id, started_at) VALUES (?,?,?,?,?)",
            (run_id, pipeline, version, flow_run_id, time.time()),
        )

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Store the run's summary."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?", (time.time(), json.dumps(summary), run_id)
        )

    def add(self, records: Iterable[DecisionRecord]) -> None:
        """Write records in one transaction."""
        rows = [
            (
                r.run_id, r.doc_id, r.stage_id, r.pipeline, r.pipeline_version, r.input_hash, r.prompt_version,
                r.status, r.rung, r.rung_label, r.model, json.dumps(r.parameters), int(r.review), r.reason,
                json.dumps(r.attempts_json()), len(r.attempts), r.tokens_in, r.tokens_out, r.cost_usd,
                r.latency_ms, time.time(), json.dumps(r.verdicts_json()), json.dumps(r.route) if r.route else None,
            )
            for r in records
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO decisions ({_COLUMNS}) VALUES ({','.join('?' * 23)})", rows
            )

    def records(self, run_id: str) -> list[dict[str, Any]]:
        """All records of a run, attempts decoded."""
        self._db.row_factory = sqlite3.Row
        try:
            rows = self._db.execute("SELECT * FROM decisions WHERE run_id = ? ORDER BY doc_id, stage_id", (run_id,))
            out = []
            for row in rows:
                item = dict(row)
                item["attempts"] = json.loads(item["attempts"])
                item["verdicts"] = json.loads(item["verdicts"])
                item["route"] = json.loads(item["route"]) if item["route"] else None
                item["parameters"] = json.loads(item["parameters"])
                out.append(item)
            return out
        finally:
            self._db.row_factory = None

    def pipeline_spend(self, pipeline: str, since: float) -> tuple[float, int]:
        """USD and tokens that runs of ``pipeline`` recorded here since ``since`` (a Unix time)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions WHERE pipeline = ? AND created_at >= ?",
            (pipeline, since),
        ).fetchone()
        return float(row[0]), int(row[1])

    def run_ids(self) -> list[str]:
        """Every run in the store, newest first."""
        return [row[0] for row in self._db.execute("SELECT run_id FROM runs ORDER BY started_at DESC")]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
