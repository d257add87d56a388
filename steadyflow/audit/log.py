"""The decision log: one record per document per stage, in ``decisions.sqlite`` (one file per output folder).

Documents are known here only by a *key*: an HMAC of the document's id under a
secret salt kept in this file. Ids are often file names or fields of the
document (an e-mail address, a customer name), and nothing of a document may be
kept in records; the key still lets a run find its own documents again (resume),
and lets a person who knows an id find its records (``key(doc_id)``).

What a run did as a whole (runs, completed documents, sink marks) is the run
ledger's (:mod:`steadyflow.audit.ledger`), in ``runs.sqlite`` next to this file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steadyflow.audit import reasons
from steadyflow.audit.records import DecisionRecord, document_key
from steadyflow.audit.sqlite import StoreError, add_column, connect, migrate, opening, tables, writing
from steadyflow.core.vocabulary import ENDED_BY_SQL

LOG_NAME = "decisions.sqlite"

RUN_TABLES = ("runs", "completed", "superseded", "sink_marks", "sink_files")
"""Tables a decisions.sqlite written before the split holds for the run ledger.

See :func:`~steadyflow.audit.ledger.open_ledger`.
"""

_DECISIONS = """
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
    PRIMARY KEY (run_id, doc_id, stage_id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _base(db: sqlite3.Connection) -> None:
    had = tables(db)
    db.executescript(_DECISIONS)
    if "decisions" in had and "meta" not in had:
        # a file from before document keys holds plain ids: keep using them, so its runs can still be resumed
        db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', '')")


def _verdicts(db: sqlite3.Connection) -> None:
    add_column(db, "decisions", "verdicts", "TEXT NOT NULL DEFAULT '[]'")


def _route(db: sqlite3.Connection) -> None:
    add_column(db, "decisions", "route", "TEXT")


def _queue_ms(db: sqlite3.Connection) -> None:
    # before it, latency_ms held the wait for a slot too: old rows keep that meaning
    add_column(db, "decisions", "queue_ms", "REAL NOT NULL DEFAULT 0")


def _confidence(db: sqlite3.Connection) -> None:
    add_column(db, "decisions", "confidence", "TEXT")


def _reviews(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS reviews (doc_id TEXT NOT NULL, reviewer TEXT NOT NULL, decided_at REAL NOT NULL, "
        "action TEXT NOT NULL, changed TEXT NOT NULL, output_sha256 TEXT NOT NULL)"
    )


def _replay(db: sqlite3.Connection) -> None:
    # what replay needs without document text: where the document came from, its hash, its output's fingerprint
    add_column(db, "decisions", "source_ref", "TEXT")
    add_column(db, "decisions", "document_hash", "TEXT")
    add_column(db, "decisions", "outputs", "TEXT")


_MIGRATIONS = (_base, _verdicts, _route, _queue_ms, _confidence, _reviews, _replay)
"""Numbered by position (``PRAGMA user_version``); never reorder, only append."""

_COLUMNS = (
    "run_id, doc_id, stage_id, pipeline, pipeline_version, input_hash, prompt_version, status, rung, rung_label, "
    "model, parameters, review, reason, attempts, n_attempts, tokens_in, tokens_out, cost_usd, latency_ms, "
    "created_at, verdicts, route, queue_ms, confidence, source_ref, document_hash, outputs"
)

Superseded = tuple[str, str, str, str, float, int, int, float]
"""A set-aside record: (run_id, key, stage_id, pipeline, cost_usd, tokens, n_attempts, created_at)."""


class DecisionLog:
    """Append-only log of decision records; safe to share within one process."""

    def __init__(self, path: Path, *, readonly: bool = False, salt: bytes | None = None) -> None:
        """Open (or create) the log at ``path``; ``readonly`` opens an existing log without writing anything.

        ``salt`` makes a new log key documents as another log does (a run's shadow store keys them as the run).
        """
        self.path = path
        with opening(path, "decision log"):
            self._db = connect(path, readonly=readonly)
            if readonly:
                if "decisions" not in tables(self._db):
                    raise StoreError(
                        f"{path}: not a steadyflow decisions store (a run's output folder has decisions.sqlite)"
                    )
            else:
                migrate(self._db, _MIGRATIONS)
            self._salt = self._load_salt(create=not readonly, salt=salt)

    def _load_salt(self, *, create: bool, salt: bytes | None = None) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone() if self._has_meta() else None
        if row is None and create:
            value = salt.hex() if salt is not None else secrets.token_hex(16)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (value,))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        return bytes.fromhex(row[0]) if row else b""

    def _has_meta(self) -> bool:
        return "meta" in tables(self._db)

    def key(self, doc_id: str) -> str:
        """How this folder names the document ``doc_id``: an HMAC under its salt.

        Logs that predate keys name it by the id itself.
        """
        return document_key(self._salt, doc_id)

    @property
    def salt(self) -> bytes:
        """The secret this log keys documents and digests outputs with (for a store that must match it)."""
        return self._salt

    def digest(self, value: str) -> str:
        """A keyed digest of an output value's JSON (see :func:`~steadyflow.audit.records.fingerprint`)."""
        return hmac.new(self._salt, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turn SQLite's write failures (disk full, read-only folder) into one-line :class:`StoreError`."""
        with writing(self.path, "decisions store"):
            yield

    def has_run_tables(self) -> bool:
        """Whether this file was written before the split and still holds the run ledger's tables."""
        return "runs" in tables(self._db)

    def drop_run_tables(self) -> None:
        """Drop the pre-split run tables, once the run ledger holds a copy of them."""
        with self._db:
            self._db.execute("BEGIN")
            for table in RUN_TABLES:
                self._db.execute(f"DROP TABLE IF EXISTS {table}")

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
                json.dumps(r.confidence) if r.confidence else None,
                r.source_ref,
                r.document_hash,
                json.dumps(r.outputs) if r.outputs is not None else None,
            )
            for r in records
        ]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO decisions ({_COLUMNS}) VALUES ({','.join('?' * 28)})", rows)

    def add_review(self, doc_id: str, reviewer: str, action: str, changed: list[str], output: str) -> float:
        """Record that ``reviewer`` accepted or corrected a document's output; when, as a Unix time.

        Keeps the document's key, the names of the fields changed and a hash of the output, never the output.
        """
        at = time.time()
        digest = hashlib.sha256(output.encode("utf-8", "surrogatepass")).hexdigest()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?)",
                (self.key(doc_id), reviewer, at, action, json.dumps(changed), digest),
            )
        return at

    def reviewed(self) -> dict[str, tuple[str, float, str]]:
        """Document key -> (reviewer, time, action) of its latest review."""
        if "reviews" not in tables(self._db):  # a read-only open of a log from before reviews
            return {}
        rows = self._db.execute("SELECT doc_id, reviewer, decided_at, action FROM reviews ORDER BY decided_at")
        return {key: (reviewer, at, action) for key, reviewer, at, action in rows}

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
                # a read-only log from before migration 5 has no such column
                item["confidence"] = json.loads(item["confidence"]) if item.get("confidence") else None
                item["parameters"] = json.loads(item["parameters"])
                item["outputs"] = json.loads(item["outputs"]) if item.get("outputs") else None
                out.append(item)
            return out
        finally:
            self._db.row_factory = None

    def profile_rows(self, run_ids: Collection[str]) -> Iterator[dict[str, Any]]:
        """What drift counts of the records of ``run_ids``, one at a time, ordered by run and document."""
        marks = ",".join("?" * len(run_ids))
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        # a read-only log from before its migrations (_verdicts, _replay) lacks these columns: nothing kept there
        verdicts = "verdicts" if "verdicts" in columns else "'[]'"
        outputs = "outputs" if "outputs" in columns else "NULL"
        rows = self._db.execute(
            f"SELECT run_id, doc_id, stage_id, status, rung_label, review, cost_usd, latency_ms, {verdicts}, {outputs} "
            f"FROM decisions WHERE run_id IN ({marks}) ORDER BY run_id, doc_id, stage_id",
            tuple(run_ids),
        )
        names = ("run_id", "doc_id", "stage_id", "status", "rung_label", "review", "cost_usd", "latency_ms")
        for row in rows:
            item = dict(zip(names, row[:8], strict=True))
            item["verdicts"] = json.loads(row[8])
            item["outputs"] = json.loads(row[9]) if row[9] else None
            yield item

    def unfinished(self, run_id: str, done: Collection[str]) -> list[Superseded]:
        """The cost lines of a run's records whose documents (keys) are not in ``done``: what a resume sets aside."""
        rows = self._db.execute(
            "SELECT run_id, doc_id, stage_id, pipeline, cost_usd, tokens_in + tokens_out, n_attempts, created_at "
            "FROM decisions WHERE run_id = ?",
            (run_id,),
        )
        return [row for row in rows if row[1] not in done]

    def remove(self, rows: list[Superseded]) -> None:
        """Delete the records ``rows`` name (set aside in the run ledger first), in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM decisions WHERE run_id = ? AND doc_id = ? AND stage_id = ?", [row[:3] for row in rows]
            )

    def pipeline_spend(self, pipeline: str, since: float) -> tuple[float, int]:
        """USD and tokens the records of ``pipeline`` hold since ``since`` (a Unix time); not interrupted attempts."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) FROM decisions "
            "WHERE pipeline = ? AND created_at >= ?",
            (pipeline, since),
        ).fetchone()
        return float(row[0]), int(row[1])

    def run_spend(self, run_id: str) -> tuple[float, int]:
        """USD and tokens of a run's records (the run ledger keeps what interrupted attempts cost)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0) "
            "FROM decisions WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return float(row[0]), int(row[1])

    def overview(self, run_id: str) -> dict[str, Any]:
        """Record totals of a run computed in SQL (flat memory at any size): outcomes, cost, latency, checks, reasons.

        Documents completed and quarantined are the run ledger's: see :func:`steadyflow.audit.report.run_overview`.
        """
        by_rung: dict[str, dict[str, int]] = {}
        for stage, label, count in self._db.execute(
            f"SELECT stage_id, {ENDED_BY_SQL}, COUNT(*) FROM decisions WHERE run_id = ? GROUP BY 1, 2 ORDER BY 1, 2",
            (run_id,),
        ):
            by_rung.setdefault(stage, {})[label] = count
        usd, tokens = self.run_spend(run_id)
        checks = self._db.execute(
            "SELECT json_extract(v.value, '$.check'), json_extract(v.value, '$.action'), COUNT(*) "
            "FROM decisions, json_each(decisions.verdicts) AS v "
            "WHERE run_id = ? AND json_extract(v.value, '$.passed') = 0 "
            "GROUP BY 1, 2 ORDER BY 3 DESC",
            (run_id,),
        )
        return {
            "by_rung": by_rung,
            "cost_usd": round(usd, 6),
            "tokens": tokens,
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

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
