"""One batch run: read documents lazily, run stages chunk by chunk, write sinks, resume exactly once.

Exactly once, after a crash at any point: a chunk's decision records are stored,
its rows written durably, and then its documents are marked *completed* together
with the sink marks that cover them, in one SQLite transaction
(:meth:`DecisionStore.complete`). A resumed run skips completed documents (no
model is called for them again) and cuts file sinks back to the recorded marks,
so rows of a chunk that was written but not yet marked are dropped and written
again once (SQL sinks ignore a second insert of the same key instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.store import DecisionStore, StoreError
from steadyflow.core.document import Document
from steadyflow.flows.summary import RunSummary
from steadyflow.io.lock import probe
from steadyflow.io.outputs import STORE_NAME, check_file_sinks, open_sinks, output_folder, sink_spec
from steadyflow.io.sinks import SqlRows, output_row, quarantine_row
from steadyflow.io.sources import count_documents, read_documents, source_for
from steadyflow.providers.local_model import cache_dir
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import AiStage
from steadyflow.spec.resilience import CacheRung
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache


class Progress(Protocol):
    """What ``steadyflow run`` shows while a batch runs (see cli.py)."""

    def start(self, total: int | None, skipped: int) -> None:
        """The batch starts: ``total`` documents (None if unknown), ``skipped`` done by an earlier attempt."""

    def update(self, summary: RunSummary, finished: int) -> None:
        """A document finished: ``finished`` documents of this attempt went through every stage (or were quarantined)."""


class ResumeError(Exception):
    """A run cannot be resumed (unknown id, or the pipeline changed since)."""


@dataclass
class RunOptions:
    """Per-run settings from the CLI; ``None`` means "as the pipeline file says"."""

    input: str | None = None
    output: str | None = None
    concurrency: int | None = None
    chunk_size: int | None = None
    no_cache: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    resume: bool = False
    """Continue ``run_id``: skip its completed documents, cut file sinks back to its last marks."""
    overwrite: bool = False
    """Replace sink files that belong to an unfinished run or to no run recorded in the folder."""
    overrides: list[str] = field(default_factory=list)
    """The ``--set`` values the pipeline was loaded with (Dask workers load it again)."""
    progress: Progress | None = None


OnRecord = Callable[[DecisionRecord], None]
"""Called with each document's record as soon as its stage ends for it (it is stored at once)."""

StageRunner = Callable[[str, int, list[Document], OnRecord], Awaitable[tuple[list[Document], list[DecisionRecord]]]]
"""Runs one stage over one chunk: (stage id, chunk index, documents, on_record) -> (documents, records).

A runner in this process calls ``on_record`` as each document ends; one in another process (Dask)
cannot, and returns the chunk's records only: those not passed to ``on_record`` are stored then.
"""


def spec_hash(pipeline: LoadedPipeline) -> str:
    """A fingerprint of the pipeline as loaded (overrides included): resume refuses a changed pipeline."""
    return hashlib.sha256(pipeline.spec.model_dump_json().encode()).hexdigest()[:16]


def folder_of(pipeline: LoadedPipeline, options: RunOptions) -> Path:
    """The folder of outputs, quarantine and decisions.sqlite (see :func:`steadyflow.io.outputs.output_folder`)."""
    return output_folder(pipeline.spec, pipeline.base_dir, options.output)


def check_resume(pipeline: LoadedPipeline, options: RunOptions) -> None:
    """Raise :class:`ResumeError` unless ``options.run_id`` can be resumed with this pipeline.

    ``--resume last`` means the newest run of this pipeline in the store that never finished.
    """
    db = folder_of(pipeline, options) / STORE_NAME
    if not db.is_file():
        raise ResumeError(f"--resume {options.run_id}: no decisions store at {db} (give the --output of that run)")
    store = DecisionStore(db)
    try:
        if options.run_id == "last":
            unfinished = store.unfinished_runs(pipeline.spec.pipeline)
            if not unfinished:
                raise ResumeError(f"--resume last: {db} has no unfinished run of {pipeline.spec.pipeline}")
            options.run_id = unfinished[0]
        info = store.run_info(options.run_id)
        if info is None:
            known = ", ".join(store.run_ids()[:5]) or "none"
            raise ResumeError(f"--resume {options.run_id}: {db} has no such run (newest: {known})")
        if info["pipeline"] != pipeline.spec.pipeline or (info["spec_hash"] or "") != spec_hash(pipeline):
            raise ResumeError(
                f"--resume {options.run_id}: the pipeline changed since that run started; "
                "resume with the same file and --set values, or start a new run"
            )
    finally:
        store.close()


def check_outputs(pipeline: LoadedPipeline, options: RunOptions) -> None:
    """Raise ``SinkError`` or ``LockedError`` now if the run would be refused its output folder or sinks."""
    folder = folder_of(pipeline, options)
    probe(folder)
    check_file_sinks(
        sink_spec(pipeline.spec), folder, pipeline.base_dir, options.run_id, options.resume, options.overwrite
    )


def _documents(pipeline: LoadedPipeline, options: RunOptions) -> tuple[Iterator[Document], Callable[[], int]]:
    """The source's documents, and a function counting them (for progress)."""
    if options.input:
        spec, base = source_for(options.input), Path.cwd()
    elif pipeline.spec.source is not None:
        spec, base = pipeline.spec.source, pipeline.base_dir
    else:
        raise ValueError("the pipeline has no source: give --input PATH")
    return read_documents(spec, base), lambda: count_documents(spec, base)


def _not_done(
    docs: Iterator[Document], done: set[str], store: DecisionStore, summary: RunSummary
) -> Iterator[Document]:
    if not done:  # a fresh run: no key to compute per document
        yield from docs
        return
    for doc in docs:
        if store.key(doc.id) in done:
            summary.resumed += 1
            continue
        yield doc


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(itertools.islice(docs, size)):
        yield chunk


def open_budget(pipeline: LoadedPipeline, store: DecisionStore, run_id: str) -> Budget:
    """The run's budget, charged with what earlier runs (and an earlier attempt of this run) spent."""
    spec = pipeline.spec.budget
    before_usd, before_tokens = 0.0, 0
    if spec is not None and spec.pipeline is not None:
        before_usd, before_tokens = store.pipeline_spend(
            pipeline.spec.pipeline, time.time() - spec.pipeline_window_h * 3600
        )
    budget = Budget(spec, before_usd, before_tokens)
    spent = store.run_spend(run_id)
    budget.usd, budget.tokens = spent
    budget.pipeline_usd_before -= spent[0]  # already counted in the pipeline's spend
    budget.pipeline_tokens_before -= spent[1]
    return budget


def open_cache(pipeline: LoadedPipeline, options: RunOptions) -> OutputCache | None:
    """The output cache, when a ladder has a cache rung and --no-cache is not given."""
    uses_cache = any(isinstance(r, CacheRung) for s in pipeline.spec.stages if isinstance(s, AiStage) for r in s.ladder)
    if options.no_cache or not uses_cache:
        return None
    path = pipeline.spec.run.cache_path
    return OutputCache(pipeline.base_dir / path if path else cache_dir() / "outputs.sqlite")


@dataclass
class _Recorder:
    """Stores each record as its document ends, so a crash keeps its record and its cost, and counts documents done.

    Records of documents not yet completed are set aside on resume (:meth:`DecisionStore.supersede_unfinished`),
    so storing them early keeps exactly-once intact.
    """

    store: DecisionStore
    summary: RunSummary
    progress: Progress | None
    finished: int = 0
    """Documents of this attempt through every stage (or quarantined), written to a sink or not yet."""

    def add(self, records: list[DecisionRecord], last: bool) -> int:
        """Store and count records of one stage; returns how many of their documents are now done."""
        self.store.add(records)
        self.summary.add_records(records)
        done = sum(1 for r in records if last or r.status == "quarantined")
        self.advance(done)
        return done

    def advance(self, done: int) -> None:
        """``done`` more documents finished: tell the progress."""
        if done > 0:
            self.finished += done
            if self.progress is not None:
                self.progress.update(self.summary, self.finished)

    async def stage(
        self, run_stage: StageRunner, stage_id: str, index: int, chunk: list[Document], last: bool
    ) -> tuple[list[Document], int]:
        """Run one stage over a chunk, storing records as they come; (documents, how many finished here)."""
        seen: set[str] = set()
        ended = 0

        failure: list[StoreError] = []

        def on_record(record: DecisionRecord) -> None:
            # runs inside the stage's Prefect task: a full disk must not raise there (Prefect would log a traceback);
            # it is raised below, in the flow, and the chunk is not marked completed, so a resume does it again
            nonlocal ended
            if failure:
                return
            seen.add(record.doc_id)
            try:
                with self.store.writing():
                    ended += self.add([record], last)
            except StoreError as exc:
                failure.append(exc)

        chunk, records = await run_stage(stage_id, index, chunk, on_record)
        if failure:
            raise failure[0]
        rest = [r for r in records if r.doc_id not in seen]  # from another process (Dask): they come with the chunk
        if rest:
            ended += self.add(rest, last)
        return chunk, ended


async def run_batch(
    pipeline: LoadedPipeline, options: RunOptions, store: DecisionStore, summary: RunSummary, run_stage: StageRunner
) -> None:
    """Run every document of the source through every stage; fills ``summary``."""
    spec = pipeline.spec
    concurrency = options.concurrency or spec.run.concurrency
    chunk_size = options.chunk_size or spec.run.chunk_size
    folder = folder_of(pipeline, options)
    done = store.completed_ids(options.run_id) if options.resume else set()
    marks = store.marks(options.run_id) if options.resume else None
    sinks = open_sinks(sink_spec(spec), folder, pipeline.base_dir, options.run_id, store, marks, options.overwrite)
    # registered only once its sinks are claimed: a run refused at the door is not left "unfinished"
    store.start_run(options.run_id, spec.pipeline, spec.version, summary.flow_run_id, spec_hash(pipeline))
    sink, quarantine, summary.output_path, summary.quarantine_path = (
        sinks.outputs,
        sinks.quarantine,
        sinks.output_path,
        sinks.quarantine_path,
    )
    if options.resume:
        for rows, quarantined in ((sink, False), (quarantine, True)):  # in a SQL table but not yet marked: completed
            if isinstance(rows, SqlRows):
                written = [doc_id for doc_id in rows.written_ids() if store.key(doc_id) not in done]
                store.complete(options.run_id, [(doc_id, quarantined) for doc_id in written], {})
                done |= {store.key(doc_id) for doc_id in written}
        summary.interrupted_usd = store.supersede_unfinished(options.run_id)[0]
    docs, count = _documents(pipeline, options)
    if options.progress is not None:
        options.progress.start(count(), len(done))
    slots = asyncio.Semaphore(max(2, -(-2 * concurrency // chunk_size)))

    recorder = _Recorder(store, summary, options.progress)

    async def handle(index: int, chunk: list[Document]) -> None:
        try:
            ended = 0
            for number, stage in enumerate(pipeline.stages):
                chunk, done = await recorder.stage(
                    run_stage, stage.id, index, chunk, last=number == len(pipeline.stages) - 1
                )
                ended += done
            ok = sink.write([output_row(d) for d in chunk if d.quarantined is None])
            held = quarantine.write([quarantine_row(d) for d in chunk if d.quarantined is not None])
            store.complete(
                options.run_id, [(d.id, d.quarantined is not None) for d in chunk], {"outputs": ok, "quarantine": held}
            )
            summary.add_documents(chunk)
            recorder.advance(len(chunk) - ended)  # documents no stage ran for (none today) still count as done
        finally:
            slots.release()

    # only unfinished chunks are held, so memory stays flat however long the batch is
    pending: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]

    try:
        for index, chunk in enumerate(_chunks(_not_done(docs, done, store, summary), chunk_size)):
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
        sinks.close()
