"""Where a run writes: one run per folder, no sink over another run's data or the run's own stores, CSV cells inert."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.audit.sqlite import StoreError
from steadyflow.io.lock import LockedError, folder_lock, probe
from steadyflow.io.outputs import check_run_files, open_sinks
from steadyflow.io.sinks import FileRows, SinkError
from steadyflow.spec import SpecError
from steadyflow.spec.loader import parse_spec
from steadyflow.spec.models import FileSink


def row(i: int) -> dict[str, object]:
    return {"id": f"d{i}", "source": f"s{i}", "review": False, "rungs": {"t": "model:m"}, "outputs": {"t": {"n": i}}}


def test_a_second_run_cannot_take_a_folder_and_is_told_who_has_it(tmp_path: Path) -> None:
    first = folder_lock(tmp_path).acquire("run-one")
    with pytest.raises(LockedError, match=r"output folder .* is in use by run run-one \(pid \d+"):
        folder_lock(tmp_path).acquire("run-two")
    with pytest.raises(LockedError):
        probe(tmp_path)
    first.release()
    folder_lock(tmp_path).acquire("run-two").release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from steadyflow.io.lock import folder_lock; "
                f"folder_lock(Path({str(tmp_path)!r})).acquire('doomed'); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="doomed"):
            probe(tmp_path)
    finally:
        holder.kill()
        holder.wait(10)
    folder_lock(tmp_path).acquire("next").release()  # the kernel dropped the dead run's lock


def _open(folder: Path, store: RunLedger, run_id: str, *, resume: bool = False, overwrite: bool = False) -> object:
    marks = store.marks(run_id) if resume else None
    return open_sinks(FileSink(kind="jsonl", path="out.jsonl"), folder, folder, run_id, store, marks, overwrite)


def test_a_new_run_never_truncates_an_unfinished_runs_outputs(tmp_path: Path) -> None:
    store = RunLedger(tmp_path / "runs.sqlite")
    store.start_run("a", "p", "1", None)
    sinks = _open(tmp_path, store, "a")
    mark = sinks.outputs.write([row(1), row(2)])  # type: ignore[attr-defined]
    store.complete("a", [("d1", False), ("d2", False)], {"outputs": mark, "quarantine": (0, "")})
    sinks.close()  # type: ignore[attr-defined]  # ... and run a was killed here
    before = (tmp_path / "out.jsonl").read_bytes()
    store.start_run("b", "p", "1", None)
    with pytest.raises(SinkError, match=r"holds the outputs of run a, which did not finish; resume it with --resume a"):
        _open(tmp_path, store, "b")
    assert (tmp_path / "out.jsonl").read_bytes() == before
    resumed = _open(tmp_path, store, "a", resume=True)  # the first run continues where it was
    resumed.outputs.write([row(3)])  # type: ignore[attr-defined]
    resumed.close()  # type: ignore[attr-defined]
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["d1", "d2", "d3"]


def test_a_finished_runs_file_is_replaced_and_a_foreign_file_only_when_asked(tmp_path: Path) -> None:
    store = RunLedger(tmp_path / "runs.sqlite")
    (tmp_path / "out.jsonl").write_text("the user's own file\n")
    store.start_run("a", "p", "1", None)
    with pytest.raises(SinkError, match="was not written by a run recorded in"):
        _open(tmp_path, store, "a")
    assert (tmp_path / "out.jsonl").read_text() == "the user's own file\n"
    sinks = _open(tmp_path, store, "a", overwrite=True)
    sinks.outputs.write([row(1)])  # type: ignore[attr-defined]
    sinks.close()  # type: ignore[attr-defined]
    store.finish_run("a", {})
    store.start_run("b", "p", "1", None)
    _open(tmp_path, store, "b").close()  # type: ignore[attr-defined]  # a finished run's outputs make way for the next run


def test_resume_refuses_a_file_that_changed_since_its_mark(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = FileRows(path, "jsonl")
    mark = sink.write([row(1), row(2)])
    sink.close()
    path.write_bytes(path.read_bytes().replace(b"d1", b"X1"))  # same length, other bytes
    with pytest.raises(SinkError, match="changed since this run wrote it"):
        FileRows(path, "jsonl", resume_at=mark)
    path.write_bytes(b"short")  # another run truncated it: resuming would pad it with NUL bytes
    with pytest.raises(SinkError, match="changed since this run wrote it"):
        FileRows(path, "jsonl", resume_at=mark)
    assert path.read_bytes() == b"short"


def _problems(sink: str) -> list[str]:
    text = (
        "pipeline: p\n"
        'models: {m: {provider: openai, base_url: "http://127.0.0.1:1/v1"}}\n'
        'stages: [{id: s, kind: ai, prompt: {template: "{{ text }}"}, output: {c: {enum: [a]}}, '
        "ladder: [{model: m}]}]\n"
        f"sink: {sink}\n"
    )
    try:
        parse_spec(text, "p.yaml")
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ("{kind: jsonl, path: ../../victim.jsonl}", "leaves the output folder"),
        ("{kind: jsonl, path: /etc/steadyflow.jsonl}", "leaves the output folder"),
        ("{kind: jsonl, path: decisions.sqlite}", "a file the run keeps for itself"),
        ("{kind: csv, path: sub/quarantine.jsonl}", "a file the run keeps for itself"),
        ("{kind: sql, url: 'sqlite:///decisions.sqlite'}", "a file the run keeps for itself"),
        ("{kind: sql, url: 'sqlite:////var/lib/app.sqlite'}", "outside the output folder"),
        ("{kind: sql, url: 'sqlite:///../app.sqlite'}", "outside the output folder"),
        ("{kind: sql, url: 'sqlite://'}", "in-memory SQLite database is gone"),
        ("{kind: sql, url: 'sqlite:///:memory:'}", "in-memory SQLite database is gone"),
    ],
)
def test_validate_refuses_sinks_outside_the_folder_or_over_run_files(sink: str, message: str) -> None:
    problems = _problems(sink)
    assert len(problems) == 1 and problems[0].startswith("p.yaml:4:") and message in problems[0], problems


def test_outside_output_is_an_explicit_choice(tmp_path: Path) -> None:
    assert _problems("{kind: jsonl, path: ../shared/out.jsonl, outside_output: true}") == []
    assert _problems("{kind: sql, url: 'sqlite:////var/lib/app.sqlite', outside_output: true}") == []
    # even then, never onto the run's own stores
    folder = tmp_path / "out"
    DecisionLog(folder / "decisions.sqlite").close()
    store = RunLedger(folder / "runs.sqlite")
    link = tmp_path / "alias.jsonl"
    link.symlink_to(folder / "decisions.sqlite")  # a symlink is no way around it either
    before = hashlib.sha256((folder / "decisions.sqlite").read_bytes()).hexdigest()
    with pytest.raises(SinkError, match=r"would overwrite the run's own decisions\.sqlite"):
        open_sinks(FileSink(kind="jsonl", path=str(link), outside_output=True), folder, tmp_path, "r", store, None)
    assert hashlib.sha256((folder / "decisions.sqlite").read_bytes()).hexdigest() == before


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    sink = FileRows(path, "csv")
    hostile = [
        '=HYPERLINK("http://x","y")',
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "plain",
        "a=b",
        " =1",
        "\ufeff=1",
        "\uff1d1",
    ]
    sink.write(
        [
            {"id": f"d{i}", "source": "s", "review": False, "rungs": {"t": "m"}, "outputs": {"t": {"v": v, "n": -5}}}
            for i, v in enumerate(hostile)
        ]
    )
    sink.close()
    rows = list(csv.DictReader(path.open(newline="")))
    assert [r["t.v"] for r in rows] == [
        '\'=HYPERLINK("http://x","y")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\t=1",
        "plain",
        "a=b",
        "' =1",
        "'\ufeff=1",
        "'\uff1d1",
    ]
    assert rows[0]["t.n"] == "-5"  # numbers stay numbers


def test_a_read_only_store_is_checked_and_never_written(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "app.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE customers (name TEXT)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a steadyflow decisions store"):
        DecisionLog(other, readonly=True)
    with pytest.raises(StoreError, match="not a steadyflow run ledger"):
        RunLedger(other, readonly=True)
    assert other.read_bytes() == before


def test_a_store_from_before_sink_ownership_still_knows_who_wrote_the_sink(tmp_path: Path) -> None:
    import sqlite3

    store = RunLedger(tmp_path / "runs.sqlite")
    store.start_run("old", "p", "1", None)
    store.complete("old", [("d1", False)], {"outputs": (10, ""), "quarantine": (0, "")})
    store.finish_run("old", {})
    store.close()
    with sqlite3.connect(tmp_path / "runs.sqlite") as connection:
        connection.execute("DELETE FROM sink_files")  # as a folder from before sink ownership has it once migrated
    (tmp_path / "out.jsonl").write_text('{"id": "d1"}\n')
    store = RunLedger(tmp_path / "runs.sqlite")
    store.start_run("new", "p", "1", None)
    _open(tmp_path, store, "new").close()  # type: ignore[attr-defined]  # the old finished run's file makes way


def test_sinks_and_stores_are_never_written_through_links(tmp_path: Path) -> None:
    # another folder, whose run is live: a link must not let this run truncate or fill its files
    other, folder = tmp_path / "other", tmp_path / "out"
    other.mkdir()
    folder.mkdir()
    (other / "out.jsonl").write_text('{"id": "theirs"}\n')
    (folder / "out.jsonl").symlink_to(other / "out.jsonl")
    store = RunLedger(folder / "runs.sqlite")
    with pytest.raises(SinkError, match="is a symbolic link"):
        _open(folder, store, "r", overwrite=True)
    assert (other / "out.jsonl").read_text() == '{"id": "theirs"}\n'
    store.close()
    (folder / "out.jsonl").unlink()
    DecisionLog(other / "decisions.sqlite").close()
    (folder / "decisions.sqlite").symlink_to(other / "decisions.sqlite")
    with pytest.raises(SinkError, match=r"decisions\.sqlite is a symbolic link"):
        check_run_files(folder)


def test_a_sink_outside_the_folder_is_locked_at_its_real_path(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "alias").symlink_to(shared)
    first = RunLedger(tmp_path / "a" / "runs.sqlite")
    second = RunLedger(tmp_path / "b" / "runs.sqlite")
    spec = FileSink(kind="jsonl", path=str(shared / "all.jsonl"), outside_output=True)
    held = open_sinks(spec, tmp_path / "a", tmp_path, "a", first, None)
    with pytest.raises(LockedError, match="is in use by run a"):
        open_sinks(
            FileSink(kind="jsonl", path=str(tmp_path / "alias" / "all.jsonl"), outside_output=True),
            tmp_path / "b",
            tmp_path,
            "b",
            second,
            None,
            overwrite=True,
        )
    held.close()
