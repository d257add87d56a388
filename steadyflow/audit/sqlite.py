"""What the decision log and the run ledger share: opening a SQLite file, numbered migrations, one-line errors."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class StoreError(Exception):
    """A run's SQLite file (decision log or run ledger) cannot be opened or written (one line, no traceback)."""


Migration = Callable[[sqlite3.Connection], None]
"""One schema step; the file's ``PRAGMA user_version`` counts the steps applied."""


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (WAL, waits for a busy writer).

    ``readonly`` opens an existing file, writing nothing.
    """
    if readonly:
        return sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, check_same_thread=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Apply the steps this file has not had yet, each with its new version number in one transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(migrations, start=1):
        if number <= version:
            continue
        with db:
            db.execute("BEGIN")
            step(db)
            db.execute(f"PRAGMA user_version = {number}")  # PRAGMA takes no parameters; number is ours


def tables(db: sqlite3.Connection, schema: str = "main") -> set[str]:
    """Names of the tables in ``schema`` (``main`` or an attached database)."""
    return {row[0] for row in db.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}


def columns(db: sqlite3.Connection, table: str, schema: str = "main") -> set[str]:
    """Names of the columns of ``table``."""
    return {row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")}


def add_column(db: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    """Add a column unless the file has it (files written before versions were numbered may have it already)."""
    if column not in columns(db, table):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn SQLite's write failures (disk full, read-only folder) into one-line :class:`StoreError`."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{path}: cannot write the {what}: {exc}") from None


@contextmanager
def opening(path: Path, what: str) -> Iterator[None]:
    """Turn a file that cannot be opened (not SQLite, unreadable) into one-line :class:`StoreError`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the {what}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot open the {what}: {exc.strerror}") from None
