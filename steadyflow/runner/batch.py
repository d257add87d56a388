"""The batch: read documents lazily, run stages chunk by chunk, write sinks, resume exactly once; no Prefect.

Exactly once, after a crash at any point: a chunk's decision records are stored,
its rows written durably, and then its documents are marked *completed* together
with the sink marks that cover them, in one run-ledger transaction
(:meth:`Run.complete`). A resumed run skips completed documents (no model is
called for them again) and cuts file sinks back to the recorded marks, so rows of
a chunk that was written but not yet marked are dropped and written again once
(SQL sinks ignore a second insert of the same key instead).

How a stage runs over a chunk is a :data:`StageRunner`: :func:`local_stages` calls
the engine in this process; ``steadyflow.flows`` wraps it in Prefect tasks.
:func:`run_local` runs a whole pipeline this way, without Prefect.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.sqlite import StoreError
from steadyflow.core.document import Document
from steadyflow.io.sinks import output_row, quarantine_row
from steadyflow.io.sources import count_documents, read_documents
from steadyflow.providers.local_server import LocalEndpoints
from steadyflow.runner.run import Progress, Run, RunOptions, source_of
from steadyflow.runner.shadow import Shadow
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.errors import SpecError
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.stages.checks import load_checked
from steadyflow.stages.engine import Engine

OnRecord = Callable[[DecisionRecord], None]
"""Called with each document's record as soon as its stage ends for it (it is stored at once)."""

StageRunner = Callable[[str, int, list[Document], OnRecord], Awaitable[tuple[list[Document], list[DecisionRecord]]]]
"""Runs one stage over one chunk: (stage id, chunk index, documents, on_record) -> (documents, records).

A runner in this process calls ``on_record`` as each document ends; one in another process (Dask)
cannot, and returns the chunk's records only: those not passed to ``on_record`` are stored then.
"""


def _documents(pipeline: LoadedPipeline, options: RunOptions) -> tuple[Iterator[Document], Callable[[], int]]:
    """The source's documents, and a function counting them (for progress)."""
    spec, base = source_of(pipeline, options.input)
    return read_documents(spec, base), lambda: count_documents(spec, base)


def _not_done(docs: Iterator[Document], run: Run) -> Iterator[Document]:
    if not run.done:  # a fresh run: no key to compute per document
        yield from docs
        return
    for doc in docs:
        if run.log.key(doc.id) in run.done:
            run.summary.resumed += 1
            continue
        yield doc


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(itertools.islice(docs, size)):
        yield chunk


@dataclass
class _Recorder:
    """Stores each record as its document ends, so a crash keeps its record and its cost, and counts documents done.

    Records of documents not yet completed are set aside on resume
    (:func:`steadyflow.audit.ledger.supersede_unfinished`), so storing them early keeps exactly-once intact.
    """

    run: Run
    progress: Progress | None
    finished: int = 0
    """Documents of this attempt through every stage (or quarantined), written to a sink or not yet."""

    def add(self, records: list[DecisionRecord], last: bool) -> int:
        """Store and count records of one stage; returns how many of their documents are now done."""
        self.run.record(records)
        self.run.summary.add_records(records)
        done = sum(1 for r in records if last or r.status == "quarantined")
        self.advance(done)
        return done

    def advance(self, done: int) -> None:
        """``done`` more documents finished: tell the progress."""
        if done > 0:
            self.finished += done
            if self.progress is not None:
                self.progress.update(self.run.summary, self.finished)

    async def stage(
        self, run_stage: StageRunner, stage_id: str, index: int, chunk: list[Document], last: bool
    ) -> tuple[list[Document], int]:
        """Run one stage over a chunk, storing records as they come; (documents, how many finished here)."""
        seen: set[str] = set()
        ended = 0
        failure: list[StoreError] = []
        started = time.time()
        traced: list[DecisionRecord] = []

        def on_record(record: DecisionRecord) -> None:
            # may run inside a Prefect task: a full disk must not raise there (Prefect would log a traceback);
            # it is raised below, and the chunk is not marked completed, so a resume does it again
            nonlocal ended
            if failure:
                return
            seen.add(record.doc_id)
            traced.append(record)
            try:
                ended += self.add([record], last)
            except StoreError as exc:
                failure.append(exc)

        chunk, records = await run_stage(stage_id, index, chunk, on_record)
        if failure:
            raise failure[0]
        rest = [r for r in records if r.doc_id not in seen]  # from another process (Dask): they come with the chunk
        if rest:
            ended += self.add(rest, last)
        if self.run.tracer is not None:
            self.run.tracer.chunk(stage_id, index, started, traced + rest, chunk)
        return chunk, ended


async def run_batch(run: Run, run_stage: StageRunner) -> None:
    """Run every document of the source that ``run`` has not completed through every stage; fills ``run.summary``.

    Chunks run concurrently, reading no further ahead than the chunks in flight (memory stays flat however
    long the batch); the first failure stops reading, lets the chunks in flight end, and is raised.
    """
    pipeline, options, sinks = run.pipeline, run.options, run.sinks
    docs, count = _documents(pipeline, options)
    shadow = await _open_shadow(run)
    if options.progress is not None:
        options.progress.start(count(), len(run.done))
    slots = asyncio.Semaphore(max(2, -(-2 * run.concurrency // run.chunk_size)))
    recorder = _Recorder(run, options.progress)
    stages = pipeline.stages

    async def handle(index: int, chunk: list[Document]) -> None:
        try:
            copies = shadow.take(run.log, chunk) if shadow is not None else []
            ended = 0
            for number, stage in enumerate(stages):
                chunk, done = await recorder.stage(run_stage, stage.id, index, chunk, last=number == len(stages) - 1)
                ended += done
            ok = sinks.outputs.write([output_row(d) for d in chunk if d.quarantined is None])
            held = sinks.quarantine.write([quarantine_row(d) for d in chunk if d.quarantined is not None])
            run.complete(chunk, {"outputs": ok, "quarantine": held})
            run.summary.add_documents(chunk)
            recorder.advance(len(chunk) - ended)  # documents no stage ran for (none today) still count as done
            if shadow is not None:  # only once production's rows are durable and marked: it never waits on the shadow
                await shadow.run(copies)
        finally:
            slots.release()

    pending: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]

    try:
        for index, chunk in enumerate(_chunks(_not_done(docs, run), run.chunk_size)):
            await slots.acquire()  # read no further ahead than the chunks in flight
            if failed:
                break
            task = asyncio.create_task(handle(index, chunk))
            pending.add(task)
            task.add_done_callback(finished)
        await asyncio.gather(*list(pending), return_exceptions=True)
        if failed:
            raise failed[0]
    finally:
        for still in list(pending):
            still.cancel()
        if shadow is not None:
            run.summary.notes.append(shadow.note())
            await shadow.aclose()


async def _open_shadow(run: Run) -> Shadow | None:
    """The run's shadow (``--shadow``), its candidate loaded and checked again, its models started."""
    if run.options.shadow is None:
        return None
    try:
        candidate = load_checked(run.options.shadow, [])
        shadow = Shadow.open(candidate, run.options.shadow_share, run.folder, run.run_id, run.log)
    except (SpecError, StoreError, OSError) as exc:  # e.g. the candidate file changed since the CLI checked it
        run.summary.notes.append(f"shadow: not run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        return None
    await shadow.start(run.concurrency)
    return shadow


async def process(run: Run, run_stage: StageRunner, engine: Engine | None = None) -> RunSummary:
    """Run the batch, close ``engine`` (if this process has one), complete the summary and finish the run.

    A run that raises is not finished: it can be resumed.
    """
    started = time.perf_counter()
    summary = run.summary
    try:
        with run.writing():
            await run_batch(run, run_stage)
    finally:
        if engine is not None:
            await engine.aclose()
            summary.breakers_opened = {name: c.breaker.opened for name, c in engine.clients.items() if c.breaker.opened}
        summary.budget_skipped = run.budget.skipped
        summary.duration_s = time.perf_counter() - started
    run.finish()
    return summary


def local_stages(engine: Engine) -> StageRunner:
    """Run each stage over a chunk with ``engine`` in this process, records stored as each document ends."""

    async def run_stage(
        stage_id: str, index: int, docs: list[Document], on_record: OnRecord
    ) -> tuple[list[Document], list[DecisionRecord]]:
        return docs, await engine.run_stage(stage_id, docs, on_record)

    return run_stage


async def arun_local(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Run ``pipeline`` over its documents in this event loop, without Prefect; see :func:`run_local`."""
    local = LocalEndpoints(pipeline.spec.models, pipeline.spec.logprob_models())
    with local as base_urls, Run.open(pipeline, options) as run:
        run.summary.notes.extend(local.notes)
        engine = run.engine(base_urls, local.model_ids)
        return await process(run, local_stages(engine), engine)


def run_local(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Run ``pipeline`` in this process without Prefect: the same batch, stores, resume and sinks as a flow run.

    Raises the one-line :data:`~steadyflow.runner.run.OPERATIONAL` errors (the run can then be resumed with
    ``RunOptions(run_id=..., resume=True)``); anything else propagates as it is.
    """
    return asyncio.run(arun_local(pipeline, options))
