"""The audit store: one tamper-evident trail of every decision, across runs and output folders.

Runs write each decision record here as well as to their folder's ``decisions.sqlite``, with who
ran the pipeline and the policy in force; reviews, run starts and ends, retention changes and purges
are records of their own. Every record is one link of a hash chain (:mod:`steadyflow.audit.chain`),
optionally signed. SQLite by default, PostgreSQL for teams: the URL is SQLAlchemy's, already expanded
(the runner fills ``${NAME}`` and resolves relative paths).

Appends are serialised: on PostgreSQL by locking the chain's head row, on SQLite by ``BEGIN
IMMEDIATE``, so runs in several processes (or machines) append to one chain. Documents are known
only by a key (an HMAC of their id under this store's own salt), as in the decision log; payloads hold
names, hashes, numbers and error kinds, never document text.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from steadyflow.audit.chain import (
    GENESIS,
    AuditError,
    Signer,
    Verification,
    canonical,
    record_hash,
    verify_rows,
)
from steadyflow.audit.records import document_key

SCHEMA_VERSION = "1"
CHAIN = "main"

_tables = sa.MetaData()
RECORDS = sa.Table(
    "audit_records",
    _tables,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("at", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("doc_key", sa.String),
    sa.Column("stage_id", sa.String),
    sa.Column("pipeline", sa.String),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String, nullable=False),
    sa.Column("hash", sa.String, nullable=False),
    sa.Column("key_id", sa.String),
    sa.Column("signature", sa.String),
    sa.Index("audit_records_doc", "doc_key"),
    sa.Index("audit_records_run", "run_id"),
    sa.Index("audit_records_at", "at"),
)
HEADS = sa.Table(
    "audit_chain",
    _tables,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("head_seq", sa.BigInteger, nullable=False),
    sa.Column("head_hash", sa.String, nullable=False),
    sa.Column("anchor_seq", sa.BigInteger, nullable=False),
    sa.Column("anchor_hash", sa.String, nullable=False),
)
META = sa.Table(
    "audit_meta", _tables, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.Text, nullable=False)
)
RETENTION = sa.Table(
    "audit_retention",
    _tables,
    sa.Column("pipeline", sa.String, primary_key=True),
    sa.Column("days", sa.Integer, nullable=False),
)


def now_iso() -> str:
    """The current UTC time as the store writes it (ISO 8601, microseconds, ``Z``): text sorts as time does."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso(epoch: float) -> str:
    """A Unix time as the store writes times."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Entry:
    """One record to append: its kind, its payload, and the columns it is looked up by."""

    kind: str
    """'run', 'decision', 'run_end', 'review', 'retention' or 'purge'."""
    payload: dict[str, Any]
    run_id: str | None = None
    doc_key: str | None = None
    stage_id: str | None = None
    pipeline: str | None = None


@dataclass
class PurgeResult:
    """What a purge removed: how many records, up to which ``seq``, older than when."""

    removed: int
    through: int
    cutoff: str
    kept_for: dict[str, int] = field(default_factory=dict)


def _sqlite_transactions(engine: Engine) -> None:
    """SQLite: a writing transaction takes the write lock as it begins, so two appenders never read one head.

    Readers begin a plain (deferred) transaction: under WAL they see one snapshot and block no writer.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # the driver would BEGIN on its own, deferred; "begin" below decides
        dbapi.execute("PRAGMA busy_timeout = 60000")
        dbapi.execute("PRAGMA journal_mode = WAL")
        dbapi.execute("PRAGMA synchronous = NORMAL")  # as the decision log: a power cut may lose the last
        # transactions whole (head and records together), never leave a broken chain

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITES) else "BEGIN")


_WRITES = "steadyflow_writes"


class AuditStore:
    """One audit store (a SQLAlchemy URL); records are appended as chain links, never changed."""

    def __init__(self, url: str, shown: str, signer: Signer | None = None, *, create: bool = True) -> None:
        """Open the store at ``url``, creating it once unless ``create`` is False (then a missing store is an error).

        ``shown`` is the URL without its password, for messages.
        """
        self.shown = shown
        self.signer = signer
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            raise AuditError(f"audit store {shown}: use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        try:
            if scheme == "sqlite":
                self._engine = sa.create_engine(url, poolclass=NullPool)
                _sqlite_transactions(self._engine)
            else:
                # a server that never answers is told within seconds, not after the system's TCP timeout
                self._engine = sa.create_engine(
                    url, pool_size=2, pool_pre_ping=True, connect_args={"connect_timeout": 10}
                )
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise AuditError(f"audit store {shown}: not a usable URL ({type(exc).__name__})") from None
        self.dialect = scheme
        with self._guard("open"):
            if create:
                self._create()
            elif not sa.inspect(self._engine).has_table(HEADS.name):
                raise AuditError(f"audit store {shown}: not a steadyflow audit store (no run has written to it)")
            self._salt = bytes.fromhex(self._meta("salt") or "")

    def _guard(self, doing: str) -> AbstractContextManager[None]:
        return _guarded(self.shown, doing)

    @contextmanager
    def _writing(self, doing: str = "write") -> Iterator[Connection]:
        """A transaction that writes: SQLite takes its write lock at once (see :func:`_sqlite_transactions`)."""
        with self._guard(doing), self._engine.connect() as conn:
            conn.execution_options(**{_WRITES: True})
            with conn.begin():
                yield conn

    def _create(self) -> None:
        with self._writing("open") as conn:
            if self.dialect == "postgresql":  # two first runs at once must not both create the tables
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7202611)"))
            _tables.create_all(conn, checkfirst=True)
            if conn.execute(sa.select(HEADS.c.name).where(HEADS.c.name == CHAIN)).first() is None:
                start = {"head_seq": 0, "head_hash": GENESIS, "anchor_seq": 0, "anchor_hash": GENESIS}
                conn.execute(sa.insert(HEADS).values(name=CHAIN, **start))
                conn.execute(sa.insert(META).values(key="salt", value=secrets.token_hex(16)))
                conn.execute(sa.insert(META).values(key="schema", value=SCHEMA_VERSION))

    def _meta(self, key: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()

    def key(self, doc_id: str) -> str:
        """How this store names the document ``doc_id`` (an HMAC under its salt; see ``DecisionLog.key``)."""
        return document_key(self._salt, doc_id)

    def append(self, entries: Sequence[Entry]) -> tuple[int, str]:
        """Append ``entries`` as the next links of the chain, in one transaction; the new head (seq, hash)."""
        if not entries:
            return self.head()
        with self._writing() as conn:
            return self._append(conn, entries)

    def _append(self, conn: Connection, entries: Sequence[Entry]) -> tuple[int, str]:
        seq, prev = self._head_in(conn, lock=True)
        at = now_iso()
        rows = []
        for entry in entries:
            seq += 1
            row: dict[str, Any] = {
                "seq": seq,
                "kind": entry.kind,
                "at": at,
                "run_id": entry.run_id,
                "doc_key": entry.doc_key,
                "stage_id": entry.stage_id,
                "pipeline": entry.pipeline,
                "payload": canonical(entry.payload),
                "prev_hash": prev,
            }
            row["hash"] = prev = record_hash(row)
            row["key_id"] = self.signer.key_id if self.signer else None
            row["signature"] = self.signer.sign(prev) if self.signer else None
            rows.append(row)
        conn.execute(sa.insert(RECORDS), rows)
        conn.execute(sa.update(HEADS).where(HEADS.c.name == CHAIN).values(head_seq=seq, head_hash=prev))
        return seq, prev

    def head(self) -> tuple[int, str]:
        """The chain's last record (seq, hash), as the store keeps it apart from the records."""
        with self._guard("read"), self._engine.connect() as conn:
            return self._head_in(conn)

    def _anchor(self, conn: Connection) -> tuple[int, str]:
        row = conn.execute(sa.select(HEADS.c.anchor_seq, HEADS.c.anchor_hash).where(HEADS.c.name == CHAIN)).one()
        return int(row[0]), str(row[1])

    def rows(self, where: Any = None, *, newest_first: bool = False) -> Iterator[dict[str, Any]]:
        """Records as dicts in chain order (or newest first), streamed: flat memory over any number of them."""
        query = sa.select(RECORDS)
        if where is not None:
            query = query.where(where)
        query = query.order_by(RECORDS.c.seq.desc() if newest_first else RECORDS.c.seq)
        with self._guard("read"), self._engine.connect() as conn:
            result = conn.execution_options(yield_per=1000).execute(query)
            for row in result.mappings():
                yield dict(row)

    def decisions(self, doc_key: str, run_id: str | None = None, pipeline: str | None = None) -> list[dict[str, Any]]:
        """The decision records of one document in ``run_id`` (else its newest run here), in stage order."""
        where = (RECORDS.c.kind == "decision") & (RECORDS.c.doc_key == doc_key)
        if pipeline is not None:
            where &= RECORDS.c.pipeline == pipeline
        if run_id is None:
            newest = next(self.rows(where, newest_first=True), None)
            if newest is None:
                return []
            run_id = newest["run_id"]
        return list(self.rows(where & (RECORDS.c.run_id == run_id)))

    def verify(self, keys: dict[str, Any] | None = None) -> Verification:
        """Check the whole chain (see :func:`~steadyflow.audit.chain.verify_rows`), reading it in one snapshot."""
        with self._guard("read"), self._engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ") if self.dialect == "postgresql" else conn
            with conn.begin():  # one consistent view: a run appending meanwhile is not half seen
                head, anchor = self._head_in(conn), self._anchor(conn)
                result = conn.execution_options(yield_per=1000).execute(sa.select(RECORDS).order_by(RECORDS.c.seq))
                return verify_rows((dict(row) for row in result.mappings()), anchor, head, keys)

    def set_retention(self, pipeline: str, days: int | None, actor: str) -> None:
        """Keep ``pipeline``'s retention (days, None: forever); a change is itself a record of the chain."""
        with self._writing() as conn:
            self._head_in(conn, lock=True)
            old = conn.execute(sa.select(RETENTION.c.days).where(RETENTION.c.pipeline == pipeline)).scalar()
            if old == days:
                return
            conn.execute(sa.delete(RETENTION).where(RETENTION.c.pipeline == pipeline))
            if days is not None:
                conn.execute(sa.insert(RETENTION).values(pipeline=pipeline, days=days))
            payload = {"pipeline": pipeline, "days": days, "before": old, "actor": actor}
            self._append(conn, [Entry("retention", payload, pipeline=pipeline)])

    def retention(self) -> dict[str, int | None]:
        """Pipeline -> days its records are kept, for every pipeline with records here (None: kept forever).

        With no retention set at all, every pipeline keeps forever and the records are not scanned (every run's
        end asks this; a store without retention is the common case, and it only grows).
        """
        with self._guard("read"), self._engine.connect() as conn:
            days = dict(conn.execute(sa.select(RETENTION.c.pipeline, RETENTION.c.days)).tuples().all())
            if not days:
                return {}
            named = conn.execute(sa.select(RECORDS.c.pipeline).where(RECORDS.c.pipeline.is_not(None)).distinct())
            return {str(name): days.get(name) for (name,) in named}

    def purge(self, cutoff: str, actor: str) -> PurgeResult:
        """Delete the chain's records older than ``cutoff`` (ISO UTC) as one prefix, and record the purge.

        Only a prefix can go (the first record newer than ``cutoff`` and everything after it stay), so the
        chain still verifies from the purge's anchor. The purge record names who purged, the cutoff, how
        many records went and the anchor (the last purged record's seq and hash).
        """
        with self._writing() as conn:
            self._head_in(conn, lock=True)
            anchor = self._anchor(conn)
            first_kept = conn.execute(sa.select(sa.func.min(RECORDS.c.seq)).where(RECORDS.c.at >= cutoff)).scalar()
            if first_kept is None:
                first_kept = int(self._head_in(conn)[0]) + 1
            through = int(first_kept) - 1
            if through <= anchor[0]:
                return PurgeResult(0, anchor[0], cutoff)
            last = conn.execute(sa.select(RECORDS.c.hash).where(RECORDS.c.seq == through)).scalar()
            if last is None:
                raise AuditError(
                    f"audit store {self.shown}: record {through} is missing (run: steadyflow audit verify)"
                )
            removed = conn.execute(sa.delete(RECORDS).where(RECORDS.c.seq <= through)).rowcount
            conn.execute(sa.update(HEADS).where(HEADS.c.name == CHAIN).values(anchor_seq=through, anchor_hash=last))
            payload = {"cutoff": cutoff, "purged_through": through, "anchor_hash": last, "removed": removed}
            self._append(conn, [Entry("purge", {**payload, "actor": actor})])
        return PurgeResult(int(removed), through, cutoff)

    def purge_expired(self, actor: str) -> PurgeResult | None:
        """Purge what retention lets go: records older than the longest retention of the pipelines with records here.

        None (nothing purged) when no pipeline set one, or one keeps its records forever.
        """
        kept = self.retention()
        days = [value for value in kept.values() if value is not None]
        if not days or len(days) < len(kept):
            return None
        return self.purge(iso(dt.datetime.now(dt.UTC).timestamp() - max(days) * 86400), actor)

    def _head_in(self, conn: Connection, *, lock: bool = False) -> tuple[int, str]:
        """The head row; ``lock`` holds it until the transaction ends (PostgreSQL: appenders queue here)."""
        query = sa.select(HEADS.c.head_seq, HEADS.c.head_hash).where(HEADS.c.name == CHAIN)
        row = conn.execute(query.with_for_update() if lock else query).one()
        return int(row[0]), str(row[1])

    def close(self) -> None:
        """Release the store's connections."""
        self._engine.dispose()


@contextmanager
def _guarded(shown: str, doing: str) -> Iterator[None]:
    """Database failures (unreachable server, disk full, locked) as one-line :class:`AuditError`."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        # the driver's own message, never SQLAlchemy's text around it: that quotes the statement's parameters
        cause = getattr(exc, "orig", None)
        text = str(cause).strip() if cause is not None else ""
        first = text.splitlines()[0] if text else type(exc).__name__
        raise AuditError(f"audit store {shown}: cannot {doing}: {first[:300]}") from None
    except OSError as exc:
        raise AuditError(f"audit store {shown}: cannot {doing}: {exc.strerror or type(exc).__name__}") from None
