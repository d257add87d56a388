"""The compiler: a loaded pipeline becomes a Prefect flow.

Stages become tasks that run over *chunks* of documents (one task run per
stage per chunk, named ``stage[chunk]`` in the UI), with bounded async
concurrency per model inside. Per-document state lives in the decision
records, not in Prefect, which keeps Prefect's per-task overhead off the
per-document path.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow, flow, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.store import DecisionStore
from steadyflow.flows.summary import RunSummary
from steadyflow.io.sinks import Sink, output_row, quarantine_row
from steadyflow.io.sources import read_documents, source_for
from steadyflow.providers.local_model import cache_dir
from steadyflow.providers.local_server import LocalEndpoints
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import AiStage
from steadyflow.spec.resilience import CacheRung
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache
from steadyflow.stages.document import Document
from steadyflow.stages.engine import Engine


@dataclass
class RunOptions:
    """Per-run settings from the CLI; ``None`` means "as the pipeline file says"."""

    input: str | None = None
    output: str | None = None
    concurrency: int | None = None
    chunk_size: int | None = None
    no_cache: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while chunk := list(itertools.islice(docs, size)):
        yield chunk


def output_paths(pipeline: LoadedPipeline, options: RunOptions) -> tuple[Path, Path, Path, str]:
    """(sink file, quarantine file, decisions database, sink kind) for a run."""
    sink = pipeline.spec.sink
    name = Path(sink.path).name if sink else f"{pipeline.spec.pipeline}.jsonl"
    kind = sink.kind if sink else "jsonl"
    if options.output:
        folder = Path(options.output)
    elif sink:
        folder = (pipeline.base_dir / sink.path).parent
    else:
        folder = Path("out")
    return folder / name, folder / "quarantine.jsonl", folder / "decisions.sqlite", kind


def _source(pipeline: LoadedPipeline, options: RunOptions) -> Iterator[Document]:
    if options.input:
        return read_documents(source_for(options.input), Path.cwd())
    if pipeline.spec.source is None:
        raise ValueError("the pipeline has no source: give --input PATH")
    return read_documents(pipeline.spec.source, pipeline.base_dir)


def build_flow(pipeline: LoadedPipeline, options: RunOptions) -> Flow[[], Any]:
    """Compile ``pipeline`` into a Prefect flow that returns a :class:`RunSummary`."""
    spec = pipeline.spec
    concurrency = options.concurrency or spec.run.concurrency
    chunk_size = options.chunk_size or spec.run.chunk_size
    chunks_in_flight = max(2, -(-2 * concurrency // chunk_size))
    held: dict[int, list[Document]] = {}

    @task(name="stage", cache_policy=NONE, persist_result=False, retries=0)
    async def stage_task(engine: Engine, stage_id: str, chunk: int) -> list[DecisionRecord]:
        return await engine.run_stage(stage_id, held[chunk])

    @flow(name=spec.pipeline, flow_run_name=f"{spec.pipeline}-{options.run_id}", persist_result=False, log_prints=False)
    async def pipeline_flow() -> RunSummary:
        # local model servers live exactly as long as this flow run (see providers/local_server.py)
        local = LocalEndpoints(spec.models)
        with local as base_urls:
            return await process(base_urls, local)

    async def process(base_urls: dict[str, str], local: LocalEndpoints) -> RunSummary:
        started = time.perf_counter()
        sink_path, quarantine_path, db_path, kind = output_paths(pipeline, options)
        summary = RunSummary(run_id=options.run_id, pipeline=spec.pipeline, flow_run_id=flow_run.get_id(),
                             output_path=str(sink_path), quarantine_path=str(quarantine_path), decisions_path=str(db_path))
        store = DecisionStore(db_path)
        store.start_run(options.run_id, spec.pipeline, spec.version, summary.flow_run_id)
        summary.notes.extend(local.notes)
        sink, quarantine = Sink(sink_path, kind), Sink(quarantine_path, "jsonl")
        budget = _budget(pipeline, store)
        cache = _cache(pipeline, options)
        engine = Engine.create(pipeline, options.run_id, concurrency, base_urls, local.model_ids, budget, cache)
        slots = asyncio.Semaphore(chunks_in_flight)

        async def handle(index: int, docs: list[Document]) -> None:
            try:
                held[index] = docs
                for stage in pipeline.stages:
                    run = stage_task.with_options(task_run_name=f"{stage.id}[{index}]")
                    records = await run(quote_engine(engine), stage.id, index)
                    store.add(records)
                    summary.add_records(records)
                sink.write([output_row(d) for d in docs if d.quarantined is None])
                quarantine.write([quarantine_row(d) for d in docs if d.quarantined is not None])
                summary.add_documents(docs)
            finally:
                held.pop(index, None)
                slots.release()

        try:
            pending: list[asyncio.Task[None]] = []
            for index, docs in enumerate(_chunks(_source(pipeline, options), chunk_size)):
                await slots.acquire()  # read no further ahead than the chunks in flight
                pending.append(asyncio.create_task(handle(index, docs)))
            await asyncio.gather(*pending)
        finally:
            await engine.aclose()
            if cache is not None:
                cache.close()
            summary.budget_skipped = budget.skipped
            summary.breakers_opened = {name: c.breaker.opened for name, c in engine.clients.items() if c.breaker.opened}
            sink.close()
            quarantine.close()
            summary.duration_s = time.perf_counter() - started
            store.finish_run(options.run_id, summary.as_json())
            store.close()
        return summary

    return pipeline_flow


def _budget(pipeline: LoadedPipeline, store: DecisionStore) -> Budget:
    spec = pipeline.spec.budget
    if spec is None or spec.pipeline is None:
        return Budget(spec)
    usd, tokens = store.pipeline_spend(pipeline.spec.pipeline, time.time() - spec.pipeline_window_h * 3600)
    return Budget(spec, usd, tokens)


def _cache(pipeline: LoadedPipeline, options: RunOptions) -> OutputCache | None:
    uses_cache = any(isinstance(r, CacheRung) for s in pipeline.spec.stages if isinstance(s, AiStage) for r in s.ladder)
    if options.no_cache or not uses_cache:
        return None
    path = pipeline.spec.run.cache_path
    return OutputCache(pipeline.base_dir / path if path else cache_dir() / "outputs.sqlite")


def quote_engine(engine: Engine) -> Any:
    """Keep Prefect from walking the engine's object graph when it records task inputs."""
    from prefect.utilities.annotations import quote

    return quote(engine)


def run_pipeline(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Compile and run ``pipeline`` against Prefect's ephemeral API or ``PREFECT_API_URL``."""
    summary: RunSummary = asyncio.run(build_flow(pipeline, options)())  # type: ignore[arg-type]  # async flow returns a coroutine
    return summary
