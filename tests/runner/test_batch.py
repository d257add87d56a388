"""The runner without Prefect or a server: resume after a failure, chunking, operational failures, resources."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from steadyflow.audit.sqlite import StoreError
from steadyflow.io.lock import folder_lock
from steadyflow.runner.batch import StageRunner, local_stages, process, run_local
from steadyflow.runner.run import OPERATIONAL, Run, RunOptions
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.errors import error_line
from steadyflow.spec.loader import LoadedPipeline, load_pipeline

N = 23


class Stop(Exception):
    """A failure of the machine in the middle of the batch."""


def rules_pipeline(tmp_path: Path, chunk_size: int = 4) -> LoadedPipeline:
    """Two rules stages (no model), 23 documents, a JSONL sink in tmp_path/out."""
    words = ["invoice refund", "error crash", "hello there"]
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"id": f"doc-{i:02d}", "text": f"ticket {i}: {words[i % 3]}"}) + "\n" for i in range(N))
    )
    (tmp_path / "p.yaml").write_text(f"""
pipeline: local
stages:
  - id: triage
    kind: rules
    rules:
      fields:
        category: {{keywords: {{billing: [invoice, refund], technical: [error, crash]}}, default: account}}
    output: {{category: {{enum: [billing, technical, account]}}}}
  - id: tag
    kind: rules
    rules: {{fields: {{tag: {{regex: 'ticket (\\d+)', default: none}}}}}}
    output: {{tag: {{type: string}}}}
source: {{kind: jsonl, path: docs.jsonl}}
sink: {{kind: jsonl, path: out/tickets.jsonl}}
run: {{concurrency: 2, chunk_size: {chunk_size}}}
""")
    return load_pipeline(tmp_path / "p.yaml")


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out" / "tickets.jsonl").read_text().splitlines()]


def failing_from(engine_stages: StageRunner, index: int, before: Any = None) -> StageRunner:
    """The engine's stages, but chunk ``index`` and later fail after their records were stored."""

    async def run_stage(stage_id: str, chunk: int, docs: list[Any], on_record: Any) -> Any:
        if chunk >= index and before is not None:
            before()
        result = await engine_stages(stage_id, chunk, docs, on_record)
        if chunk >= index:
            raise Stop
        return result

    return run_stage


def interrupted(pipeline: LoadedPipeline, options: RunOptions, index: int, before: Any = None) -> Run:
    """One attempt that fails from chunk ``index`` on; returns its (closed) Run."""

    async def go() -> Run:
        with Run.open(pipeline, options) as run:
            engine = run.engine()
            with pytest.raises((Stop, *OPERATIONAL)):
                await process(run, failing_from(local_stages(engine), index, before), engine)
            return run

    return asyncio.run(go())


def test_a_failure_mid_batch_is_resumed_and_every_document_is_written_once(tmp_path: Path) -> None:
    pipeline = rules_pipeline(tmp_path)
    options = RunOptions(run_id="r1")
    interrupted(pipeline, options, 2)
    before = {r["id"] for r in rows(tmp_path)}
    assert before and len(before) < N
    summary = run_local(pipeline, RunOptions(run_id="r1", resume=True))
    ids = [r["id"] for r in rows(tmp_path)]
    assert sorted(ids) == [f"doc-{i:02d}" for i in range(N)]  # each document exactly once
    assert summary.resumed == len(before) and summary.documents == N - len(before)
    with sqlite3.connect(tmp_path / "out" / "decisions.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM decisions").fetchone() == (2 * N, N)
    with sqlite3.connect(tmp_path / "out" / "runs.sqlite") as db:
        assert db.execute("SELECT finished_at IS NOT NULL FROM runs").fetchall() == [(1,)]
        assert db.execute("SELECT COUNT(*) FROM completed").fetchone()[0] == N


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_every_chunk_size_writes_the_same_outputs_once(tmp_path: Path, size: int) -> None:
    pipeline = rules_pipeline(tmp_path, chunk_size=size)
    summary = run_local(pipeline, RunOptions())
    got = sorted(rows(tmp_path), key=lambda r: r["id"])
    assert [r["id"] for r in got] == [f"doc-{i:02d}" for i in range(N)]
    assert summary.documents == N and summary.outputs == N
    reference = tmp_path / "reference"
    reference.mkdir()
    expected = sorted(rows_of(run_reference(reference)), key=lambda r: r["id"])
    assert [r["outputs"] for r in got] == [r["outputs"] for r in expected]


def run_reference(folder: Path) -> Path:
    """The same documents in one chunk: the outputs every chunk size must give."""
    run_local(rules_pipeline(folder, chunk_size=N), RunOptions())
    return folder / "out" / "tickets.jsonl"


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_full_store_is_one_operational_error_and_the_run_resumes(tmp_path: Path) -> None:
    pipeline = rules_pipeline(tmp_path)
    holder: list[Run] = []

    def fill_the_disk() -> None:
        db = holder[0].log._db  # the real file, limited to the pages it has: SQLite answers "database or disk is full"
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")

    async def go() -> str:
        with Run.open(pipeline, RunOptions(run_id="full")) as run:
            holder.append(run)
            engine = run.engine()
            stages = failing_from(local_stages(engine), 2, fill_the_disk)

            async def no_stop(stage_id: str, chunk: int, docs: list[Any], on_record: Any) -> Any:
                try:
                    return await stages(stage_id, chunk, docs, on_record)
                except Stop:  # only the store's own failure stops this run
                    return docs, []

            with pytest.raises(StoreError) as failure:
                await process(run, no_stop, engine)
            return str(failure.value)

    message = asyncio.run(go())
    assert "\n" not in message and "decisions.sqlite: cannot write the decisions store" in message
    summary = run_local(pipeline, RunOptions(run_id="full", resume=True))
    assert sorted(r["id"] for r in rows(tmp_path)) == [f"doc-{i:02d}" for i in range(N)]
    assert summary.resumed > 0


def test_a_failing_sink_write_is_one_operational_error_and_the_run_resumes(tmp_path: Path) -> None:
    pipeline = rules_pipeline(tmp_path)
    holder: list[Run] = []

    def break_the_sink() -> None:
        # the sink's file now writes to /dev/full: the next write fails in the OS with "No space left on device"
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, holder[0].sinks.outputs._handle.fileno())  # type: ignore[attr-defined]
        os.close(full)

    async def go() -> BaseException:
        with Run.open(pipeline, RunOptions(run_id="sink")) as run:
            holder.append(run)
            engine = run.engine()
            stages = failing_from(local_stages(engine), 2, break_the_sink)

            async def no_stop(stage_id: str, chunk: int, docs: list[Any], on_record: Any) -> Any:
                try:
                    return await stages(stage_id, chunk, docs, on_record)
                except Stop:
                    return docs, []

            with pytest.raises(OPERATIONAL) as failure:
                await process(run, no_stop, engine)
            return failure.value

    error = asyncio.run(go())
    assert isinstance(error, OSError) and "\n" not in error_line(error)
    run_local(pipeline, RunOptions(run_id="sink", resume=True))
    assert sorted(r["id"] for r in rows(tmp_path)) == [f"doc-{i:02d}" for i in range(N)]


def test_the_run_releases_everything_it_holds_when_the_batch_raises(tmp_path: Path) -> None:
    pipeline = rules_pipeline(tmp_path)
    run = interrupted(pipeline, RunOptions(run_id="r1"), 1)
    folder_lock(tmp_path / "out").acquire("next").release()  # the folder's lock is free again
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        run.log.records("r1")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        run.ledger.run_ids()
    with pytest.raises(ValueError, match="closed"):
        run.sinks.outputs.write([{"id": "x"}])
    with sqlite3.connect(tmp_path / "out" / "runs.sqlite") as db:  # not finished: it can be resumed
        assert db.execute("SELECT finished_at FROM runs WHERE run_id = 'r1'").fetchone() == (None,)


def test_a_run_refused_at_the_door_is_not_registered_and_holds_nothing(tmp_path: Path) -> None:
    pipeline = rules_pipeline(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tickets.jsonl").write_text("the user's own file\n")
    with pytest.raises(OPERATIONAL, match="was not written by a run recorded in"):
        run_local(pipeline, RunOptions(run_id="r1"))
    folder_lock(tmp_path / "out").acquire("next").release()
    with sqlite3.connect(tmp_path / "out" / "runs.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_summary_of_a_local_run(tmp_path: Path) -> None:
    summary: RunSummary = run_local(rules_pipeline(tmp_path), RunOptions())
    data = summary.as_json()
    assert set(data["by_rung"]) == {"triage", "tag"} and all(sum(c.values()) == N for c in data["by_rung"].values())
    assert summary.decisions_path.endswith("decisions.sqlite") and summary.output_path.endswith("tickets.jsonl")
