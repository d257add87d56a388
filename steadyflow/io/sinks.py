"""Where finished documents go: JSONL/CSV files or a SQL table, plus a quarantine with reasons.

Every sink can be resumed exactly once after a crash (see ``flows/batch.py``):

* file sinks report a *mark* (the file's length after a durable write); the run
  records it with the documents it covers in one transaction, and a resumed run
  cuts the file back to the last recorded mark before appending, so rows written
  after the last commit (or half a row) disappear and are written again once;
* SQL sinks key rows by (run_id, doc_id) and ignore a second insert of the same
  key, so a row is never written twice, and they tell which documents a run
  already wrote, so a resumed run does not process them again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import IO, Any, Protocol

from steadyflow.audit.ledger import Mark
from steadyflow.core.document import Document


def output_row(doc: Document) -> dict[str, Any]:
    """The sink row of a document that every stage accepted."""
    return {"id": doc.id, "source": doc.source, "review": doc.review, "rungs": doc.rungs, "outputs": doc.outputs}


def quarantine_row(doc: Document) -> dict[str, Any]:
    """The quarantine row: which stage refused the document, and why. No document text."""
    stage, reason = doc.quarantined or ("", "")
    return {"id": doc.id, "source": doc.source, "stage": stage, "reason": reason}


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"id": row["id"], "source": row["source"], "review": row["review"]}
    for stage, rung in row["rungs"].items():
        flat[f"{stage}._rung"] = rung
    for stage, output in row["outputs"].items():
        for key, value in output.items():
            flat[f"{stage}.{key}"] = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
    return flat


class RowSink(Protocol):
    """What the batch needs of a sink."""

    def write(self, rows: list[dict[str, Any]]) -> Mark:
        """Write rows durably; return the mark to record with them ((0, '') where marks are not used)."""

    def close(self) -> None:
        """Release the file or connection."""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _neutral(value: Any) -> Any:
    """A CSV cell that a spreadsheet would read as a formula gets a leading quote (as trusted CSV exports do).

    Spreadsheets skip leading blanks (and a BOM) and read fullwidth signs as their ASCII
    twins, so those are looked through before the first character is judged.
    """
    if isinstance(value, str):
        head = unicodedata.normalize("NFKC", value[:8]).lstrip(" \u00a0\ufeff")
        if head.startswith(_FORMULA_START) or value.startswith(_FORMULA_START):
            return "'" + value
    return value


class FileRows:
    """Appends rows to a JSONL or CSV file, durably (flush + fsync) per batch of rows.

    It keeps a running SHA-256 of what the file holds, recorded with each mark, so a
    resume can prove the file is still the one this run wrote before cutting it back.
    """

    def __init__(self, path: Path, kind: str, resume_at: Mark | None = None) -> None:
        self.path, self.kind = path, kind
        self._fields: list[str] | None = None
        self._digest = hashlib.sha256()
        self._broken: OSError | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if resume_at is None or not path.exists():
                self._handle: IO[bytes] = path.open("wb")
            else:
                self._handle = path.open("r+b")
                self._resume(*resume_at)
        except OSError as exc:
            raise SinkWriteError(path, exc) from None

    def _resume(self, length: int, digest: str) -> None:
        size = os.fstat(self._handle.fileno()).st_size
        self._handle.seek(0)
        remaining = length
        while remaining > 0 and (block := self._handle.read(min(remaining, 1 << 20))):
            self._digest.update(block)
            remaining -= len(block)
        if size < length or (digest and self._digest.hexdigest() != digest):
            self._handle.close()
            raise SinkError(
                f"{self.path} changed since this run wrote it (another run or an edit); resuming would lose "
                "data: start a new run, or restore the file"
            )
        self._handle.truncate(length)  # drop rows written after the last recorded mark
        self._handle.seek(length)
        if self.kind == "csv" and length > 0:
            with self.path.open(newline="", encoding="utf-8") as handle:
                self._fields = next(csv.reader(handle), None)

    def _encode(self, rows: list[dict[str, Any]]) -> bytes:
        if self.kind != "csv":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8", "surrogatepass")
        text = io.StringIO()
        flat_rows = [{k: _neutral(v) for k, v in (_flatten(row) if "outputs" in row else row).items()} for row in rows]
        if self._fields is None and flat_rows:
            self._fields = list(flat_rows[0])
            csv.writer(text).writerow([_neutral(name) for name in self._fields])
        writer = csv.DictWriter(text, fieldnames=self._fields or [], extrasaction="ignore")
        writer.writerows(flat_rows)
        return text.getvalue().encode("utf-8", "surrogatepass")

    def write(self, rows: list[dict[str, Any]]) -> Mark:
        """Append rows and make them durable; return the file's new length and digest."""
        if self._broken is not None:  # after a failed write the tail is unknown: only a resume may continue
            raise SinkWriteError(self.path, self._broken)
        if rows:
            data = self._encode(rows)
            try:
                self._handle.write(data)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:
                self._broken = exc
                raise SinkWriteError(self.path, exc) from None
            self._digest.update(data)
        return self._handle.tell(), self._digest.hexdigest()

    def close(self) -> None:
        """Close the file (a failed flush of unmarked rows loses nothing: a resume writes them again)."""
        with contextlib.suppress(OSError):
            self._handle.close()


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SinkError(Exception):
    """A sink cannot be opened (missing environment variable, unreachable database, owned by another run)."""


class SinkWriteError(OSError):
    """Writing a sink failed (disk full, read-only folder); what was marked is safe, a resume continues."""

    def __init__(self, where: Path | str, exc: OSError | None = None, message: str = "") -> None:
        super().__init__(exc.errno if exc else None, exc.strerror if exc else message, str(where))


def expand_url(url: str, base_dir: Path) -> str:
    """Fill ``${NAME}`` from the environment.

    A relative SQLite path is made relative to ``base_dir`` (the output folder).
    """
    missing = [name for name in _ENV.findall(url) if name not in os.environ]
    if missing:
        raise SinkError(f"sink url needs the environment variable {missing[0]}, which is not set")
    url = _ENV.sub(lambda m: os.environ[m.group(1)], url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        url = prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url


def shown_url(url: str) -> str:
    """The URL without its password, for messages and summaries."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The database file of an expanded SQLite URL (None for other databases and ``:memory:``)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


class SqlRows:
    """Rows of one table in a SQL database; (run_id, doc_id) is the key, duplicates are ignored."""

    def __init__(self, url: str, table: str, run_id: str, quarantine: bool = False) -> None:
        import sqlalchemy as sa

        self.run_id, self.shown = run_id, f"{shown_url(url)} table {table}"
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        meta = sa.MetaData()
        columns: list[Any] = [
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("doc_id", sa.Text, primary_key=True),
            sa.Column("source", sa.Text, nullable=False),
        ]
        if quarantine:
            columns += [sa.Column("stage", sa.Text, nullable=False), sa.Column("reason", sa.Text, nullable=False)]
        else:
            columns += [
                sa.Column("review", sa.Boolean, nullable=False),
                sa.Column("rungs", sa.JSON, nullable=False),
                sa.Column("outputs", sa.JSON, nullable=False),
            ]
        columns.append(sa.Column("written_at", sa.Float, nullable=False))
        self.table = sa.Table(table, meta, *columns)
        self._lock: Any = None
        try:
            meta.create_all(self.engine)
            self._lock_table(table)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise SinkError(f"cannot open sink {shown_url(url)}: {str(exc.orig).strip().splitlines()[0]}") from None

    def _lock_table(self, table: str) -> None:
        """On PostgreSQL, one run at a time per table.

        It takes a session advisory lock, released when the run's connection ends.
        """
        if self.engine.dialect.name != "postgresql":
            return  # a SQLite file is locked like a folder (see open_sinks)
        import sqlalchemy as sa

        key = int.from_bytes(hashlib.sha256(f"steadyflow:{table}".encode()).digest()[:8], "big", signed=True)
        connection = self.engine.connect()
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            connection.close()
            self.engine.dispose()
            raise SinkError(f"{self.shown} is in use by another run; wait for it to finish")
        connection.commit()
        self._lock = connection

    def _insert(self, values: list[dict[str, Any]]) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self.table).values(values).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(self.table).values(values).on_conflict_do_nothing()

    def write(self, rows: list[dict[str, Any]]) -> Mark:
        """Insert rows in one transaction; a row this run already wrote is left as it is."""
        import sqlalchemy as sa

        if rows:
            now = time.time()
            values = [
                {
                    "run_id": self.run_id,
                    "doc_id": row["id"],
                    "written_at": now,
                    **{k: v for k, v in row.items() if k != "id"},
                }
                for row in rows
            ]
            try:
                with self.engine.begin() as connection:
                    connection.execute(self._insert(values))
            except sa.exc.OperationalError as exc:
                raise SinkWriteError(self.shown, message=str(exc.orig).strip().splitlines()[0]) from None
        return 0, ""

    def written_ids(self) -> set[str]:
        """Documents of this run already in the table."""
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            query = sa.select(self.table.c.doc_id).where(self.table.c.run_id == self.run_id)
            return {row[0] for row in connection.execute(query)}

    def close(self) -> None:
        """Release the table's lock and close the connection pool."""
        if self._lock is not None:
            with contextlib.suppress(Exception):
                self._lock.close()
        self.engine.dispose()
