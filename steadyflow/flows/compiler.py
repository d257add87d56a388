"""The compiler: a loaded pipeline becomes a Prefect flow.

Stages become tasks that run over *chunks* of documents (one task run per
stage per chunk, named ``stage[chunk]`` in the UI), with bounded async
concurrency per model inside. Per-document state lives in the decision
records, not in Prefect, which keeps Prefect's per-task overhead off the
per-document path. The batch itself (sources, sinks, resume) is
``flows/batch.py``; the run's summary artifact is ``flows/artifact.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import Flow, flow
from prefect.runtime import flow_run

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.store import DecisionStore
from steadyflow.flows.artifact import publish_summary
from steadyflow.flows.batch import RunOptions, StageRunner, check_resume, folder_of, open_budget, open_cache, run_batch, spec_hash
from steadyflow.flows.summary import RunSummary
from steadyflow.flows.tasks import RemoteJob, quoted, remote_stage_task, stage_task
from steadyflow.providers.local_server import LocalEndpoints
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache
from steadyflow.stages.document import Document
from steadyflow.stages.engine import Engine

__all__ = ["RunOptions", "build_flow", "run_pipeline"]


def _task_runner(pipeline: LoadedPipeline) -> Any:
    settings = pipeline.spec.run
    if settings.task_runner != "dask":
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # worker processes (not threads): the stage work is Python, which threads would serialise
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "processes": True, "threads_per_worker": 1,
                                          "dashboard_address": None})


def build_flow(pipeline: LoadedPipeline, options: RunOptions) -> Flow[[], Any]:
    """Compile ``pipeline`` into a Prefect flow that returns a :class:`RunSummary`."""
    spec = pipeline.spec
    runner = _task_runner(pipeline)
    extra: dict[str, Any] = {"task_runner": runner} if runner is not None else {}

    @flow(name=spec.pipeline, flow_run_name=f"{spec.pipeline}-{options.run_id}", persist_result=False, log_prints=False, **extra)
    async def pipeline_flow() -> RunSummary:
        # local model servers live exactly as long as this flow run (see providers/local_server.py)
        local = LocalEndpoints(spec.models)
        with local as base_urls:
            return await _process(pipeline, options, base_urls, local)

    return pipeline_flow


async def _process(pipeline: LoadedPipeline, options: RunOptions, base_urls: dict[str, str], local: LocalEndpoints) -> RunSummary:
    started = time.perf_counter()
    spec = pipeline.spec
    concurrency = options.concurrency or spec.run.concurrency
    db_path = folder_of(pipeline, options) / "decisions.sqlite"
    summary = RunSummary(run_id=options.run_id, pipeline=spec.pipeline, flow_run_id=flow_run.get_id(), decisions_path=str(db_path))
    store = DecisionStore(db_path)
    store.start_run(options.run_id, spec.pipeline, spec.version, summary.flow_run_id, spec_hash(pipeline))
    summary.notes.extend(local.notes)
    budget = open_budget(pipeline, store, options.run_id)
    cache = open_cache(pipeline, options)
    engine: Engine | None = None  # with Dask, each worker builds its own per chunk (flows/tasks.py)
    if spec.run.task_runner == "dask":
        run_stage = _remote_runner(pipeline, options, concurrency, base_urls, local.model_ids, budget, cache, summary)
    else:
        engine = Engine.create(pipeline, options.run_id, concurrency, base_urls, local.model_ids, budget, cache)
        run_stage = _local_runner(engine)
    try:
        await run_batch(pipeline, options, store, summary, run_stage)
    finally:
        if engine is not None:
            await engine.aclose()
            summary.breakers_opened = {name: c.breaker.opened for name, c in engine.clients.items() if c.breaker.opened}
        if cache is not None:
            cache.close()
        summary.budget_skipped = budget.skipped
        summary.duration_s = time.perf_counter() - started
        store.finish_run(options.run_id, summary.as_json())
    try:
        await publish_summary(summary, store.overview(options.run_id))
    finally:
        store.close()
    return summary


def _local_runner(engine: Engine) -> StageRunner:
    async def run(stage_id: str, index: int, docs: list[Document]) -> tuple[list[Document], list[DecisionRecord]]:
        task = stage_task.with_options(task_run_name=f"{stage_id}[{index}]")
        return docs, await task(quoted(engine), stage_id, quoted(docs))

    return run


def _remote_runner(
    pipeline: LoadedPipeline, options: RunOptions, concurrency: int, base_urls: dict[str, str], model_ids: dict[str, str],
    budget: Budget, cache: OutputCache | None, summary: RunSummary,
) -> StageRunner:
    async def run(stage_id: str, index: int, docs: list[Document]) -> tuple[list[Document], list[DecisionRecord]]:
        job = RemoteJob(
            str(pipeline.path.resolve()), tuple(options.overrides), options.run_id, stage_id, concurrency, base_urls, model_ids,
            budget.usd + summary.cost_usd, budget.tokens + summary.tokens_in + summary.tokens_out,
            str(cache.path) if cache is not None else None,
        )
        # not quoted: a quoted argument reaches a Dask worker as a plain tuple, not the documents
        future = remote_stage_task.with_options(task_run_name=f"{stage_id}[{index}]").submit(job, docs)
        result: tuple[list[Document], list[DecisionRecord]] = await asyncio.to_thread(future.result)  # type: ignore[arg-type]  # a future of an async task returns its value
        return result

    return run


def run_pipeline(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Compile and run ``pipeline`` against Prefect's ephemeral API or ``PREFECT_API_URL``.

    Raises :class:`~steadyflow.flows.batch.ResumeError` before anything runs when
    ``options.resume`` names a run that cannot be continued.
    """
    if options.resume:
        check_resume(pipeline, options)
    summary: RunSummary = asyncio.run(build_flow(pipeline, options)())  # type: ignore[arg-type]  # async flow returns a coroutine
    return summary
