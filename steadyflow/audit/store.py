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
CREATE TABLE IF NOT EXISTS completed (
    run_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    quarantined INTEGER NOT NULL,
    PRIMARY KEY (run_id, doc_id)
);
CREATE TABLE IF NOT EXISTS superseded (
    run_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    n_attempts INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_marks (
    run_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    mark INTEGER NOT NULL,
    PRIMARY KEY (run_id, sink)
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
        if "spec_hash" not in {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}:
            self._db.execute("ALTER TABLE runs ADD COLUMN spec_hash TEXT")

    def start_run(self, run_id: str, pipeline: str, version: str, flow_run_id: str | None, spec_hash: str = "") -> None:
        """Register a run before any of its records (a resumed run keeps its start time)."""
        self._db.execute(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, flow_run_id, started_at, spec_hash) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (run_id) DO UPDATE SET flow_run_id = excluded.flow_run_id, finished_at = NULL",
            (run_id, pipeline, version, flow_run_id, time.time(), spec_hash),
        )

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        """A run's row (pipeline, version, spec_hash, started/finished), or None."""
        self._db.row_factory = sqlite3.Row
        try:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return dict(row) if row else None
        finally:
            self._db.row_factory = None

    def complete(self, run_id: str, docs: list[tuple[str, bool]], marks: dict[str, int]) -> None:
        """Record finished documents (id, quarantined) and the sink marks that cover them, atomically."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO completed VALUES (?,?,?)", [(run_id, d, int(q)) for d, q in docs])
            self._db.executemany("INSERT OR REPLACE INTO sink_marks VALUES (?,?,?)", [(run_id, k, v) for k, v in marks.items()])

    def supersede_unfinished(self, run_id: str) -> tuple[float, int]:
        """Before a resume: set aside the records of documents that were not completed.

        Those documents run again and get new records; what their interrupted attempts
        cost is kept in ``superseded`` (and counted by budgets and reports). Returns it.
        """
        unfinished = "run_id = ? AND doc_id NOT IN (SELECT doc_id FROM completed WHERE run_id = ?)"
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO superseded SELECT run_id, doc_id, stage_id, pipeline, cost_usd, tokens_in + tokens_out, n_attempts, "
                f"created_at FROM decisions WHERE {unfinished}", (run_id, run_id),
            )
            self._db.execute(f"DELETE FROM decisions WHERE {unfinished}", (run_id, run_id))
        return self.interrupted(run_id)

    def interrupted(self, run_id: str) -> tuple[float, int]:
        """USD and tokens of attempts a crash interrupted (their documents ran again after --resume)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens), 0) FROM superseded WHERE run_id = ?", (run_id,)
        ).fetchone()
        return float(row[0]), int(row[1])

    def completed_ids(self, run_id: str) -> set[str]:
        """Documents a run has finished (written to a sink or quarantine)."""
        return {row[0] for row in self._db.execute("SELECT doc_id FROM completed WHERE run_id = ?", (run_id,))}

    def marks(self, run_id: str) -> dict[str, int]:
        """The last recorded sink marks of a run."""
        return dict(self._db.execute("SELECT sink, mark FROM sink_marks WHERE run_id = ?", (run_id,)).fetchall())

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
        """USD and tokens that runs of ``pipeline`` recorded here since ``since`` (a Unix time), interrupted attempts included."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(usd), 0), COALESCE(SUM(tokens), 0) FROM ("
            "SELECT cost_usd AS usd, tokens_in + tokens_out AS tokens FROM decisions WHERE pipeline = ? AND created_at >= ? "
            "UNION ALL SELECT cost_usd, tokens FROM superseded WHERE pipeline = ? AND created_at >= ?)",
            (pipeline, since, pipeline, since),
        ).fetchone()
        return float(row[0]), int(row[1])

    def run_spend(self, run_id: str) -> tuple[float, int]:
        """USD and tokens a run has recorded so far, interrupted attempts included (a resumed run starts from these)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions WHERE run_id = ?", (run_id,)
        ).fetchone()
        usd, tokens = self.interrupted(run_id)
        return float(row[0]) + usd, int(row[1]) + tokens

    def overview(self, run_id: str) -> dict[str, Any]:
        """Totals of a run computed in SQL (flat memory at any size): outcomes, cost, latency, failed checks."""
        ended = "CASE WHEN status = 'quarantined' THEN 'quarantined' ELSE COALESCE(rung_label, status) END"
        by_rung: dict[str, dict[str, int]] = {}
        for stage, label, count in self._db.execute(
            f"SELECT stage_id, {ended}, COUNT(*) FROM decisions WHERE run_id = ? GROUP BY 1, 2 ORDER BY 1, 2", (run_id,)
        ):
            by_rung.setdefault(stage, {})[label] = count
        done = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(quarantined), 0) FROM completed WHERE run_id = ?", (run_id,)
        ).fetchone()
        cost = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions WHERE run_id = ?", (run_id,)
        ).fetchone()
        per_doc = "SELECT SUM(latency_ms) AS ms FROM decisions WHERE run_id = ? GROUP BY doc_id"
        n = self._db.execute(f"SELECT COUNT(*) FROM ({per_doc})", (run_id,)).fetchone()[0]
        latency = {}
        for name, q in (("p50", 0.50), ("p95", 0.95)):
            row = self._db.execute(f"SELECT ms FROM ({per_doc}) ORDER BY ms LIMIT 1 OFFSET ?", (run_id, max(0, int(q * n + 0.5) - 1)))
            value = row.fetchone()
            latency[name] = round(value[0], 1) if value else None
        checks = self._db.execute(
            "SELECT json_extract(v.value, '$.check'), json_extract(v.value, '$.action'), COUNT(*) "
            "FROM decisions, json_each(decisions.verdicts) AS v WHERE run_id = ? AND json_extract(v.value, '$.passed') = 0 "
            "GROUP BY 1, 2 ORDER BY 3 DESC",
            (run_id,),
        )
        return {
            "documents": done[0], "quarantined": done[1], "outputs": done[0] - done[1], "by_rung": by_rung,
            "cost_usd": round(cost[0], 6), "tokens": cost[1], "latency_ms": latency,
            "failed_checks": {f"{check}:{action}": count for check, action, count in checks},
        }

    def unfinished_runs(self, pipeline: str) -> list[str]:
        """Runs of ``pipeline`` that started and never finished, newest first (candidates for --resume)."""
        rows = self._db.execute("SELECT run_id FROM runs WHERE pipeline = ? AND finished_at IS NULL ORDER BY started_at DESC", (pipeline,))
        return [row[0] for row in rows]

    def run_ids(self) -> list[str]:
        """Every run in the store, newest first."""
        return [row[0] for row in self._db.execute("SELECT run_id FROM runs ORDER BY started_at DESC")]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
