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

import csv
import io
import json
import os
import re
import time
from pathlib import Path
from typing import IO, Any, Protocol

from steadyflow.spec.models import FileSink, SqlSink
from steadyflow.stages.document import Document


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

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Write rows durably; return the mark to record with them (0 where marks are not used)."""

    def close(self) -> None:
        """Release the file or connection."""


class FileRows:
    """Appends rows to a JSONL or CSV file, durably (flush + fsync) per batch of rows."""

    def __init__(self, path: Path, kind: str, resume_at: int | None = None) -> None:
        self.path, self.kind = path, kind
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fields: list[str] | None = None
        if resume_at is None or not path.exists():
            self._handle: IO[bytes] = path.open("wb")
        else:
            self._handle = path.open("r+b")
            self._handle.truncate(resume_at)  # drop rows written after the last recorded mark
            self._handle.seek(resume_at)
            if kind == "csv" and resume_at > 0:
                with path.open(newline="", encoding="utf-8") as handle:
                    self._fields = next(csv.reader(handle), None)

    def _encode(self, rows: list[dict[str, Any]]) -> bytes:
        if self.kind != "csv":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        text = io.StringIO()
        flat_rows = [_flatten(row) if "outputs" in row else row for row in rows]
        if self._fields is None and flat_rows:
            self._fields = list(flat_rows[0])
            csv.writer(text).writerow(self._fields)
        writer = csv.DictWriter(text, fieldnames=self._fields or [], extrasaction="ignore")
        writer.writerows(flat_rows)
        return text.getvalue().encode("utf-8")

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Append rows and make them durable; return the file's new length."""
        if rows:
            self._handle.write(self._encode(rows))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return self._handle.tell()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SinkError(Exception):
    """A sink cannot be opened (missing environment variable, unreachable database)."""


def expand_url(url: str, base_dir: Path) -> str:
    """Fill ``${NAME}`` from the environment; make a relative SQLite path relative to ``base_dir``."""
    missing = [name for name in _ENV.findall(url) if name not in os.environ]
    if missing:
        raise SinkError(f"sink url needs the environment variable {missing[0]}, which is not set")
    url = _ENV.sub(lambda m: os.environ[m.group(1)], url)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        url = prefix + str((base_dir / url[len(prefix):]).resolve())
    return url


def shown_url(url: str) -> str:
    """The URL without its password, for messages and summaries."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class SqlRows:
    """Rows of one table in a SQL database; (run_id, doc_id) is the key, duplicates are ignored."""

    def __init__(self, url: str, table: str, run_id: str, quarantine: bool = False) -> None:
        import sqlalchemy as sa

        self.run_id = run_id
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
            columns += [sa.Column("review", sa.Boolean, nullable=False), sa.Column("rungs", sa.JSON, nullable=False),
                        sa.Column("outputs", sa.JSON, nullable=False)]
        columns.append(sa.Column("written_at", sa.Float, nullable=False))
        self.table = sa.Table(table, meta, *columns)
        try:
            meta.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise SinkError(f"cannot open sink {shown_url(url)}: {str(exc.orig).strip().splitlines()[0]}") from None

    def _insert(self, values: list[dict[str, Any]]) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self.table).values(values).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(self.table).values(values).on_conflict_do_nothing()

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows in one transaction; a row this run already wrote is left as it is."""
        if rows:
            now = time.time()
            values = [{"run_id": self.run_id, "doc_id": row["id"], "written_at": now,
                       **{k: v for k, v in row.items() if k != "id"}} for row in rows]
            with self.engine.begin() as connection:
                connection.execute(self._insert(values))
        return 0

    def written_ids(self) -> set[str]:
        """Documents of this run already in the table."""
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            query = sa.select(self.table.c.doc_id).where(self.table.c.run_id == self.run_id)
            return {row[0] for row in connection.execute(query)}

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()


def open_sinks(
    spec: FileSink | SqlSink, folder: Path, base_dir: Path, run_id: str, marks: dict[str, int] | None
) -> tuple[RowSink, RowSink, str, str]:
    """(outputs, quarantine, where outputs go, where quarantine goes); ``marks`` resume file sinks."""
    if isinstance(spec, SqlSink):
        url = expand_url(spec.url, base_dir)
        outputs = SqlRows(url, spec.table, run_id)
        quarantine = SqlRows(url, f"{spec.table}_quarantine", run_id, quarantine=True)
        return outputs, quarantine, f"{shown_url(url)} table {spec.table}", f"{shown_url(url)} table {spec.table}_quarantine"
    path, quarantine_path = folder / Path(spec.path).name, folder / "quarantine.jsonl"
    resume = marks is not None
    out = FileRows(path, spec.kind, (marks or {}).get("outputs", 0) if resume else None)
    held = FileRows(quarantine_path, "jsonl", (marks or {}).get("quarantine", 0) if resume else None)
    return out, held, str(path), str(quarantine_path)
