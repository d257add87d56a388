"""Sinks: durable appends, resume to a mark, SQL tables keyed by (run, document), on SQLite and a real PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from steadyflow.audit.ledger import RunLedger
from steadyflow.io.outputs import open_sinks
from steadyflow.io.sinks import FileRows, SinkError, SqlRows, expand_url, shown_url
from steadyflow.spec.models import FileSink, SqlSink


def row(i: int) -> dict[str, object]:
    return {
        "id": f"d{i}",
        "source": f"s{i}",
        "review": i % 2 == 0,
        "rungs": {"triage": "model:small"},
        "outputs": {"triage": {"category": "billing", "tags": ["a", "b"], "n": i}},
    }


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_resume_cuts_the_file_back_to_the_last_mark(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"out.{kind}"
    sink = FileRows(path, kind)
    mark = sink.write([row(0), row(1)])
    sink.write([row(2)])  # written, but the crash came before its mark was recorded
    sink.close()
    with path.open("ab") as handle:
        handle.write(b'{"id": "d3", "sou')  # and half a row
    sink = FileRows(path, kind, resume_at=mark)
    sink.write([row(2), row(3)])
    sink.close()
    if kind == "jsonl":
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    else:
        table = list(csv.DictReader(path.open(newline="")))
        ids = [r["id"] for r in table]
        assert table[0]["triage.category"] == "billing" and json.loads(table[0]["triage.tags"]) == ["a", "b"]
    assert ids == ["d0", "d1", "d2", "d3"]


def test_a_file_sink_replaces_an_old_file_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "old"}\n')
    sink = FileRows(path, "jsonl")
    sink.write([row(1)])
    sink.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["d1"]


def _check_sql(url: str) -> None:
    outputs = SqlRows(url, "tickets", "run1")
    held = SqlRows(url, "tickets_quarantine", "run1", quarantine=True)
    outputs.write([row(1), row(2)])
    outputs.write([row(2), row(3)])  # d2 again: a resumed run writing a chunk a second time
    held.write([{"id": "bad", "source": "x.pdf", "stage": "triage", "reason": "encrypted PDF"}])
    if url.startswith("postgresql"):  # one run at a time per table on a server
        with pytest.raises(SinkError, match="is in use by another run"):
            SqlRows(url, "tickets", "run2")
    written = outputs.written_ids()
    outputs.close()
    other_run = SqlRows(url, "tickets", "run2")
    other_run.write([row(1)])
    assert written == {"d1", "d2", "d3"} and other_run.written_ids() == {"d1"}
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        got = connection.execute(
            sa.text("SELECT doc_id, outputs FROM tickets WHERE run_id = 'run1' ORDER BY doc_id")
        ).fetchall()
        reason = connection.execute(sa.text("SELECT reason FROM tickets_quarantine")).scalar_one()
    engine.dispose()
    assert [r[0] for r in got] == ["d1", "d2", "d3"]
    first = got[0][1] if isinstance(got[0][1], dict) else json.loads(got[0][1])
    assert first["triage"]["tags"] == ["a", "b"]
    assert reason == "encrypted PDF"
    for sink in (held, other_run):
        sink.close()


def test_sqlite_table_sink(tmp_path: Path) -> None:
    _check_sql(f"sqlite:///{tmp_path / 'out.sqlite'}")


@pytest.mark.slow
def test_postgresql_table_sink(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS tickets, tickets_quarantine"))
    engine.dispose()
    _check_sql(postgres_url)


def test_url_takes_secrets_from_the_environment_and_never_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_PG_PASSWORD", "s3cret-value")
    url = expand_url("postgresql+psycopg://app:${SF_PG_PASSWORD}@db.internal/ops", tmp_path)
    assert "s3cret-value" in url and "s3cret-value" not in shown_url(url)
    monkeypatch.delenv("SF_PG_PASSWORD")
    with pytest.raises(SinkError, match="SF_PG_PASSWORD"):
        expand_url("postgresql+psycopg://app:${SF_PG_PASSWORD}@db.internal/ops", tmp_path)
    assert expand_url("sqlite:///rel/out.sqlite", tmp_path) == f"sqlite:///{(tmp_path / 'rel/out.sqlite').resolve()}"


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    from tests.conftest import free_port

    spec = SqlSink(kind="sql", url=f"postgresql+psycopg://nobody:pw@127.0.0.1:{free_port()}/x")
    with pytest.raises(SinkError, match=r"cannot open sink postgresql\+psycopg://nobody:\*\*\*@127.0.0.1"):
        open_sinks(spec, tmp_path, tmp_path, "r", RunLedger(tmp_path / "runs.sqlite"), None)


def test_file_sink_paths(tmp_path: Path) -> None:
    sinks = open_sinks(
        FileSink(kind="csv", path="x/tickets.csv"), tmp_path, tmp_path, "r", RunLedger(tmp_path / "runs.sqlite"), None
    )
    sinks.close()
    assert sinks.output_path == str(tmp_path / "tickets.csv") and sinks.quarantine_path == str(
        tmp_path / "quarantine.jsonl"
    )
