"""SQLite store of runs and decision records (one file per output folder).

Documents are known here only by a *key*: an HMAC of the document's id under a
secret salt kept in this store. Ids are often file names or fields of the
document (an e-mail address, a customer name), and nothing of a document may be
kept in records; the key still lets a run find its own documents again (resume),
and lets a person who knows an id find its records (``key(doc_id)``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steadyflow.audit import reasons
from steadyflow.audit.records import DecisionRecord
from steadyflow.core.vocabulary import ENDED_BY_SQL

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
    queue_ms REAL NOT NULL DEFAULT 0,
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
CREATE TABLE IF NOT EXISTS sink_files (
    path TEXT PRIMARY KEY,
    run_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_TABLES = {"runs", "decisions", "completed", "superseded", "sink_marks"}


class StoreError(Exception):
    """A decisions store cannot be opened or written (one line, no traceback)."""


Mark = tuple[int, str]
"""A file sink's durable length and the SHA-256 of its bytes up to there."""


_COLUMNS = (
    "run_id, doc_id, stage_id, pipeline, pipeline_version, input_hash, prompt_version, status, rung, rung_label, model, "
    "parameters, review, reason, attempts, n_attempts, tokens_in, tokens_out, cost_usd, latency_ms, created_at, verdicts, route, queue_ms"
)


class DecisionStore:
    """Append-only store of decision records; safe to share within one process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (or create) the store at ``path``; ``readonly`` opens an existing store without writing anything."""
        self.path = path
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, check_same_thread=False
                )
                self._check_is_store()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
            self._salt = self._load_salt(create=not readonly)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the decisions store: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the decisions store: {exc.strerror}") from None

    def _check_is_store(self) -> None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables >= _TABLES:
            raise StoreError(
                f"{self.path}: not a steadyflow decisions store (a run's output folder has decisions.sqlite)"
            )

    def _migrate(self) -> None:
        had_records = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'decisions'").fetchone() is not None
        had_meta = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        # stores written by earlier versions lack the newer columns
        if "verdicts" not in columns:
            self._db.execute("ALTER TABLE decisions ADD COLUMN verdicts TEXT NOT NULL DEFAULT '[]'")
        if "route" not in columns:
            self._db.execute("ALTER TABLE decisions ADD COLUMN route TEXT")
        if "queue_ms" not in columns:  # before it, latency_ms held the wait for a slot too: old rows keep that meaning
            self._db.execute("ALTER TABLE decisions ADD COLUMN queue_ms REAL NOT NULL DEFAULT 0")
        if "spec_hash" not in {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}:
            self._db.execute("ALTER TABLE runs ADD COLUMN spec_hash TEXT")
        if "digest" not in {row[1] for row in self._db.execute("PRAGMA table_info(sink_marks)")}:
            self._db.execute("ALTER TABLE sink_marks ADD COLUMN digest TEXT")
        if had_records and not had_meta:
            # a store from before document keys holds plain ids: keep using them, so its runs can still be resumed
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', '')")

    def _load_salt(self, *, create: bool) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone() if self._has_meta() else None
        if row is None and create:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        return bytes.fromhex(row[0]) if row else b""

    def _has_meta(self) -> bool:
        return self._db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is not None

    def key(self, doc_id: str) -> str:
        """How this store names the document ``doc_id``: an HMAC under its salt (the id itself in stores that predate keys)."""
        if not self._salt:
            return doc_id
        return hmac.new(self._salt, doc_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:24]

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turn SQLite's write failures (disk full, read-only folder) into one-line :class:`StoreError`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: cannot write the decisions store: {exc}") from None

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

    def complete(self, run_id: str, docs: list[tuple[str, bool]], marks: dict[str, Mark]) -> None:
        """Record finished documents (id, quarantined) and the sink marks that cover them, atomically."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO completed VALUES (?,?,?)", [(run_id, self.key(d), int(q)) for d, q in docs]
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO sink_marks (run_id, sink, mark, digest) VALUES (?,?,?,?)",
                [(run_id, k, length, digest) for k, (length, digest) in marks.items()],
            )

    def claim_sink(self, path: Path, run_id: str) -> None:
        """Record that ``run_id`` now writes the file sink at ``path``."""
        self._db.execute("INSERT OR REPLACE INTO sink_files VALUES (?,?)", (str(path.resolve()), run_id))

    def sink_owner(self, path: Path) -> str | None:
        """The run that last wrote the file sink at ``path``, if a run of this store did."""
        row = self._db.execute("SELECT run_id FROM sink_files WHERE path = ?", (str(path.resolve()),)).fetchone()
        if row is None and self._db.execute("SELECT COUNT(*) FROM sink_files").fetchone()[0] == 0:
            # a store from before sink ownership was kept: its newest run that wrote sinks is the best owner we know
            row = self._db.execute(
                "SELECT m.run_id FROM sink_marks m JOIN runs r USING (run_id) ORDER BY r.started_at DESC LIMIT 1"
            ).fetchone()
        return str(row[0]) if row else None

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
                f"created_at FROM decisions WHERE {unfinished}",
                (run_id, run_id),
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
        """Keys (see :meth:`key`) of the documents a run has finished (written to a sink or quarantine)."""
        return {row[0] for row in self._db.execute("SELECT doc_id FROM completed WHERE run_id = ?", (run_id,))}

    def marks(self, run_id: str) -> dict[str, Mark]:
        """The last recorded sink marks of a run (the digest is '' in stores that predate digests)."""
        rows = self._db.execute("SELECT sink, mark, digest FROM sink_marks WHERE run_id = ?", (run_id,)).fetchall()
        return {sink: (int(mark), digest or "") for sink, mark, digest in rows}

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Store the run's summary."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?", (time.time(), json.dumps(summary), run_id)
        )

    def add(self, records: Iterable[DecisionRecord]) -> None:
        """Write records in one transaction."""
        rows = [
            (
                r.run_id,
                self.key(r.doc_id),
                r.stage_id,
                r.pipeline,
                r.pipeline_version,
                r.input_hash,
                r.prompt_version,
                r.status,
                r.rung,
                r.rung_label,
                r.model,
                json.dumps(r.parameters),
                int(r.review),
                r.reason,
                json.dumps(r.attempts_json()),
                len(r.attempts),
                r.tokens_in,
                r.tokens_out,
                r.cost_usd,
                r.latency_ms,
                time.time(),
                json.dumps(r.verdicts_json()),
                json.dumps(r.route) if r.route else None,
                r.queue_ms,
            )
            for r in records
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO decisions ({_COLUMNS}) VALUES ({','.join('?' * 24)})", rows)

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
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        usd, tokens = self.interrupted(run_id)
        return float(row[0]) + usd, int(row[1]) + tokens

    def overview(self, run_id: str) -> dict[str, Any]:
        """Totals of a run computed in SQL (flat memory at any size): outcomes, cost, latency and queueing, failed checks, fallback reasons."""
        ended = ENDED_BY_SQL
        by_rung: dict[str, dict[str, int]] = {}
        for stage, label, count in self._db.execute(
            f"SELECT stage_id, {ended}, COUNT(*) FROM decisions WHERE run_id = ? GROUP BY 1, 2 ORDER BY 1, 2", (run_id,)
        ):
            by_rung.setdefault(stage, {})[label] = count
        done = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(quarantined), 0) FROM completed WHERE run_id = ?", (run_id,)
        ).fetchone()
        cost = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        checks = self._db.execute(
            "SELECT json_extract(v.value, '$.check'), json_extract(v.value, '$.action'), COUNT(*) "
            "FROM decisions, json_each(decisions.verdicts) AS v WHERE run_id = ? AND json_extract(v.value, '$.passed') = 0 "
            "GROUP BY 1, 2 ORDER BY 3 DESC",
            (run_id,),
        )
        return {
            "documents": done[0],
            "quarantined": done[1],
            "outputs": done[0] - done[1],
            "by_rung": by_rung,
            "cost_usd": round(cost[0], 6),
            "tokens": cost[1],
            "latency_ms": self._percentiles(run_id, "latency_ms"),
            "queue_ms": self._percentiles(run_id, "queue_ms"),
            "failed_checks": {f"{check}:{action}": count for check, action, count in checks},
            "fallback_reasons": reasons.nest(self.fallback_reasons(run_id)),
        }

    def _percentiles(self, run_id: str, column: str) -> dict[str, float | None]:
        """p50 and p95 over documents of ``column`` summed over a document's stages (its own time, or its queueing)."""
        per_doc = f"SELECT SUM({column}) AS ms FROM decisions WHERE run_id = ? GROUP BY doc_id"
        n = self._db.execute(f"SELECT COUNT(*) FROM ({per_doc})", (run_id,)).fetchone()[0]
        out: dict[str, float | None] = {}
        for name, q in (("p50", 0.50), ("p95", 0.95)):
            row = self._db.execute(
                f"SELECT ms FROM ({per_doc}) ORDER BY ms LIMIT 1 OFFSET ?", (run_id, max(0, int(q * n + 0.5) - 1))
            )
            value = row.fetchone()
            out[name] = round(value[0], 1) if value else None
        return out

    def fallback_reasons(self, run_id: str) -> Counter[reasons.Key]:
        """Why a run's documents fell down the ladder (see :mod:`steadyflow.audit.reasons`), streamed: flat memory.

        SQL keeps only records that can have fallen (quarantined, several attempts, a failed check).
        """
        rows = self._db.execute(
            "SELECT stage_id, status, rung, rung_label, reason, attempts, verdicts FROM decisions WHERE run_id = ? "
            "AND (status = 'quarantined' OR n_attempts > 1 OR verdicts LIKE '%\"passed\": false%')",
            (run_id,),
        )
        keys = ("stage_id", "status", "rung", "rung_label", "reason")
        return reasons.count(
            {**dict(zip(keys, row[:5], strict=True)), "attempts": json.loads(row[5]), "verdicts": json.loads(row[6])}
            for row in rows
        )

    def unfinished_runs(self, pipeline: str) -> list[str]:
        """Runs of ``pipeline`` that started and never finished, newest first (candidates for --resume)."""
        rows = self._db.execute(
            "SELECT run_id FROM runs WHERE pipeline = ? AND finished_at IS NULL ORDER BY started_at DESC", (pipeline,)
        )
        return [row[0] for row in rows]

    def run_ids(self) -> list[str]:
        """Every run in the store, newest first."""
        return [row[0] for row in self._db.execute("SELECT run_id FROM runs ORDER BY started_at DESC")]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
