"""The run ledger: what runs did as a whole, in ``runs.sqlite`` next to the decision log.

It holds the runs (started, finished, their summary), the documents each run
completed, the sink marks that cover them, which run owns each file sink, and
what interrupted attempts cost before a resume set their records aside. It
knows documents only by the decision log's keys (:meth:`DecisionLog.key`),
never by their ids.

Exactly once: a chunk's documents are marked completed together with the sink
marks that cover them in one transaction (:meth:`RunLedger.complete`).

A folder written before the split keeps these tables in ``decisions.sqlite``;
:func:`open_ledger` moves them here (copy in one transaction, then drop them
from the log: a crash between the two is repaired by the next open), and
:func:`read_ledger` reads them where they are, writing nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steadyflow.audit.log import DecisionLog, Superseded
from steadyflow.audit.sqlite import StoreError, add_column, columns, connect, migrate, opening, tables, writing

LEDGER_NAME = "runs.sqlite"

Mark = tuple[int, str]
"""A file sink's durable length and the SHA-256 of its bytes up to there."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    flow_run_id TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    summary TEXT,
    spec_hash TEXT
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
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, doc_id, stage_id, created_at)
);
CREATE TABLE IF NOT EXISTS sink_marks (
    run_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    mark INTEGER NOT NULL,
    digest TEXT,
    PRIMARY KEY (run_id, sink)
);
CREATE TABLE IF NOT EXISTS sink_files (
    path TEXT PRIMARY KEY,
    run_id TEXT NOT NULL
);
"""
# completed.doc_id and superseded.doc_id hold the log's keys; the names are those of the pre-split tables


def _base(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def _versions(db: sqlite3.Connection) -> None:
    # what replay and diff need: each run's pipeline as it ran, where its documents came from, prompts by version
    add_column(db, "runs", "snapshot_hash", "TEXT")
    add_column(db, "runs", "source", "TEXT")
    db.execute("CREATE TABLE IF NOT EXISTS pipelines (snapshot_hash TEXT PRIMARY KEY, snapshot TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS prompts (version TEXT PRIMARY KEY, system TEXT NOT NULL, template TEXT NOT NULL)"
    )


_MIGRATIONS = (_base, _versions)
"""Numbered by position (``PRAGMA user_version``); never reorder, only append."""


class RunLedger:
    """Runs, completed documents, sink marks and ownership, superseded attempts; safe to share within one process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (or create) the ledger at ``path``; ``readonly`` opens an existing one (or a pre-split log) as it is."""
        self.path = path
        with opening(path, "run ledger"):
            self._db = connect(path, readonly=readonly)
            if readonly:
                if "runs" not in tables(self._db):
                    raise StoreError(f"{path}: not a steadyflow run ledger (a run's output folder has {LEDGER_NAME})")
            else:
                migrate(self._db, _MIGRATIONS)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turn SQLite's write failures (disk full, read-only folder) into one-line :class:`StoreError`."""
        with writing(self.path, "run ledger"):
            yield

    def import_pre_split(self, log_path: Path) -> None:
        """Copy the run tables of a pre-split ``decisions.sqlite`` here, in one transaction.

        Copying twice changes nothing.
        """
        self._db.execute("ATTACH DATABASE ? AS old", (str(log_path),))
        try:
            present = tables(self._db, "old")
            with self._db:
                self._db.execute("BEGIN")
                for table in ("runs", "completed", "superseded", "sink_marks", "sink_files"):
                    if table not in present:
                        continue
                    mine = [row[1] for row in self._db.execute(f"PRAGMA main.table_info({table})")]
                    theirs = columns(self._db, table, "old")  # older files lack the newer columns
                    picked = ", ".join(name if name in theirs else "NULL" for name in mine)
                    self._db.execute(
                        f"INSERT OR IGNORE INTO main.{table} ({', '.join(mine)}) SELECT {picked} FROM old.{table}"
                    )
        finally:
            self._db.execute("DETACH DATABASE old")

    def start_run(self, run_id: str, pipeline: str, version: str, flow_run_id: str | None, spec_hash: str = "") -> None:
        """Register a run before any of its records (a resumed run keeps its start time)."""
        self._db.execute(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, flow_run_id, started_at, spec_hash) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (run_id) "
            "DO UPDATE SET flow_run_id = excluded.flow_run_id, finished_at = NULL",
            (run_id, pipeline, version, flow_run_id, time.time(), spec_hash),
        )

    def keep_version(
        self, run_id: str, snapshot: dict[str, Any], digest: str, prompts: dict[str, dict[str, str]], source: str | None
    ) -> None:
        """Keep the pipeline a run runs (its snapshot, once per version), its prompts by version and its source."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO pipelines VALUES (?, ?)", (digest, json.dumps(snapshot, sort_keys=True))
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO prompts VALUES (?, ?, ?)",
                [(version, p["system"], p["template"]) for version, p in prompts.items()],
            )
            self._db.execute("UPDATE runs SET snapshot_hash = ?, source = ? WHERE run_id = ?", (digest, source, run_id))

    def snapshot(self, run_id: str) -> dict[str, Any] | None:
        """The pipeline a run ran, as :func:`steadyflow.spec.snapshot.snapshot` made it; None if not kept."""
        if "pipelines" not in tables(self._db):
            return None
        row = self._db.execute(
            "SELECT p.snapshot FROM runs r JOIN pipelines p USING (snapshot_hash) WHERE r.run_id = ?", (run_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def prompt(self, version: str) -> dict[str, str] | None:
        """A recorded prompt's system and template text by its version (a prefix of 4+ digits will do)."""
        if "prompts" not in tables(self._db) or len(version) < 4:
            return None
        rows = self._db.execute(
            "SELECT version, system, template FROM prompts WHERE version LIKE ? ORDER BY version LIMIT 2",
            (version.replace("%", "").replace("_", "") + "%",),
        ).fetchall()
        if len(rows) != 1:
            return None
        return {"version": rows[0][0], "system": rows[0][1], "template": rows[0][2]}

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Store the run's summary: the run is finished (only then; any other run can be resumed)."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?", (time.time(), json.dumps(summary), run_id)
        )

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        """A run's row (pipeline, version, spec_hash, started/finished), or None."""
        self._db.row_factory = sqlite3.Row
        try:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return dict(row) if row else None
        finally:
            self._db.row_factory = None

    def unfinished_runs(self, pipeline: str) -> list[str]:
        """Runs of ``pipeline`` that started and never finished, newest first (candidates for --resume)."""
        rows = self._db.execute(
            "SELECT run_id FROM runs WHERE pipeline = ? AND finished_at IS NULL ORDER BY started_at DESC", (pipeline,)
        )
        return [row[0] for row in rows]

    def run_ids(self, finished: bool = False) -> list[str]:
        """Every run in the ledger (or only finished ones), newest first."""
        where = " WHERE finished_at IS NOT NULL" if finished else ""
        return [row[0] for row in self._db.execute(f"SELECT run_id FROM runs{where} ORDER BY started_at DESC")]

    def earlier_runs(self, run_id: str, n: int) -> list[str]:
        """The ``n`` finished runs of ``run_id``'s pipeline that started before it, newest first (a drift baseline)."""
        rows = self._db.execute(
            "SELECT r.run_id FROM runs r JOIN runs me ON me.run_id = ? "
            "WHERE r.pipeline = me.pipeline AND r.finished_at IS NOT NULL AND r.started_at < me.started_at "
            "ORDER BY r.started_at DESC LIMIT ?",
            (run_id, n),
        )
        return [row[0] for row in rows]

    def complete(self, run_id: str, docs: list[tuple[str, bool]], marks: dict[str, Mark]) -> None:
        """Record finished documents (key, quarantined) and the sink marks that cover them, atomically."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO completed VALUES (?,?,?)", [(run_id, k, int(q)) for k, q in docs]
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO sink_marks (run_id, sink, mark, digest) VALUES (?,?,?,?)",
                [(run_id, k, length, digest) for k, (length, digest) in marks.items()],
            )

    def completed_keys(self, run_id: str) -> set[str]:
        """Keys of the documents a run has finished (written to a sink or quarantine)."""
        return {row[0] for row in self._db.execute("SELECT doc_id FROM completed WHERE run_id = ?", (run_id,))}

    def documents(self, run_id: str) -> tuple[int, int]:
        """(documents completed, of which quarantined) by a run, every attempt included."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(quarantined), 0) FROM completed WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def marks(self, run_id: str) -> dict[str, Mark]:
        """The last recorded sink marks of a run (the digest is '' in files that predate digests)."""
        rows = self._db.execute("SELECT sink, mark, digest FROM sink_marks WHERE run_id = ?", (run_id,)).fetchall()
        return {sink: (int(mark), digest or "") for sink, mark, digest in rows}

    def sink_paths(self, run_id: str) -> list[str]:
        """The file sinks ``run_id`` wrote and still owns (no later run has written them since)."""
        if "sink_files" not in tables(self._db):
            return []
        return [row[0] for row in self._db.execute("SELECT path FROM sink_files WHERE run_id = ?", (run_id,))]

    def claim_sink(self, path: Path, run_id: str) -> None:
        """Record that ``run_id`` now writes the file sink at ``path``."""
        self._db.execute("INSERT OR REPLACE INTO sink_files VALUES (?,?)", (str(path.resolve()), run_id))

    def sink_owner(self, path: Path) -> str | None:
        """The run that last wrote the file sink at ``path``, if a run of this folder did."""
        row = self._db.execute("SELECT run_id FROM sink_files WHERE path = ?", (str(path.resolve()),)).fetchone()
        if row is None and "sink_files" not in tables(self._db):
            return None  # a pre-split file read as it is, from before sink ownership was kept
        if row is None and self._db.execute("SELECT COUNT(*) FROM sink_files").fetchone()[0] == 0:
            # a folder from before sink ownership was kept: its newest run that wrote sinks is the best owner we know
            row = self._db.execute(
                "SELECT m.run_id FROM sink_marks m JOIN runs r USING (run_id) ORDER BY r.started_at DESC LIMIT 1"
            ).fetchone()
        return str(row[0]) if row else None

    def set_aside(self, rows: list[Superseded]) -> None:
        """Keep what set-aside records cost (see :func:`supersede_unfinished`).

        A row kept already is not counted twice.
        """
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO superseded VALUES (?,?,?,?,?,?,?,?)", rows)

    def interrupted(self, run_id: str) -> tuple[float, int]:
        """USD and tokens of attempts a crash interrupted (their documents ran again after --resume)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens), 0) FROM superseded WHERE run_id = ?", (run_id,)
        ).fetchone()
        return float(row[0]), int(row[1])

    def interrupted_since(self, pipeline: str, since: float) -> tuple[float, int]:
        """USD and tokens of interrupted attempts of ``pipeline`` since ``since`` (a Unix time)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens), 0) FROM superseded "
            "WHERE pipeline = ? AND created_at >= ?",
            (pipeline, since),
        ).fetchone()
        return float(row[0]), int(row[1])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def open_ledger(folder: Path, log: DecisionLog) -> RunLedger:
    """Open (or create) the folder's run ledger for writing, moving a pre-split log's run tables into it first."""
    ledger = RunLedger(folder / LEDGER_NAME)
    try:
        if log.has_run_tables():
            with ledger.writing(), log.writing():
                ledger.import_pre_split(log.path)  # one transaction: all of it or nothing
                log.drop_run_tables()  # only once copied; a crash before this copies again, changing nothing
    except BaseException:
        ledger.close()
        raise
    return ledger


def read_ledger(log_path: Path) -> RunLedger | None:
    """The run ledger of the decision log at ``log_path``, opened read-only, or None if there is none.

    That is ``runs.sqlite`` next to it, or the log's own run tables while it still has them (a folder
    written before the split, not yet migrated: reading it writes nothing).
    """
    path = log_path.parent / LEDGER_NAME
    if log_path.is_file():
        with opening(log_path, "decisions store"):
            db = connect(log_path, readonly=True)
            try:
                pre_split = "runs" in tables(db)
            finally:
                db.close()
        if pre_split:  # not migrated yet (or its copy not yet dropped): these tables are still the whole truth
            return RunLedger(log_path, readonly=True)
    return RunLedger(path, readonly=True) if path.is_file() else None


def supersede_unfinished(log: DecisionLog, ledger: RunLedger, run_id: str) -> tuple[float, int]:
    """Before a resume: set aside the records of documents the run did not complete; what they cost, all attempts.

    Those documents run again and get new records; what their interrupted attempts cost is kept in
    the ledger (budgets and reports count it). Two files, so the order makes it crash-safe: the ledger
    keeps the cost first (once per record), then the log deletes the records; a crash between them
    leaves both, and the next resume sets the same records aside again without counting them twice.
    """
    rows = log.unfinished(run_id, ledger.completed_keys(run_id))
    if rows:
        ledger.set_aside(rows)
        log.remove(rows)
    return ledger.interrupted(run_id)
