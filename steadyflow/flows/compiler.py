"""The compiler: a loaded pipeline becomes a Prefect flow.

Stages become tasks that run over *chunks* of documents (one task run per
stage per chunk, named ``stage[chunk]`` in the UI), with bounded async
concurrency per model inside. Per-document state lives in the decision
records, not in Prefect, which keeps Prefect's per-task overhead off the
per-document path. The batch itself (sources, sinks, resume) is the
Prefect-free runner (:mod:`steadyflow.runner`); the run's summary artifact is
``flows/artifact.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prefect import Flow, flow
from prefect.runtime import deployment, flow_run
from prefect.states import Failed

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.report import run_overview, run_profiles
from steadyflow.core.document import Document
from steadyflow.flows.artifact import publish_summary
from steadyflow.flows.tasks import RemoteJob, RemoteResult, quoted, remote_stage_task, stage_task
from steadyflow.providers.local_server import LocalEndpoints
from steadyflow.runner.batch import OnRecord, StageRunner, process
from steadyflow.runner.run import OPERATIONAL, Run, RunOptions, check_resume
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.errors import SpecError, error_line
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.stages.engine import Engine

__all__ = ["OPERATIONAL", "RunOptions", "build_flow", "execute", "run_pipeline"]


def _task_runner(pipeline: LoadedPipeline) -> Any:
    settings = pipeline.spec.run
    if settings.task_runner != "dask":
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    import dask

    # Dask's sampling profiler calls sys._current_frames() every few ms in each worker; on CPython 3.11 before
    # 3.11.9 that can deadlock against the task's thread (cpython#116969, distributed#8616): a chunk then never
    # comes back. The workers this run starts inherit the setting (a Nanny hands its config to its worker).
    dask.config.set({"distributed.worker.profile.enabled": False})
    # worker processes (not threads): the stage work is Python, which threads would serialise
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
    )


def build_flow(
    pipeline: LoadedPipeline, options: RunOptions, failures: list[BaseException] | None = None
) -> Flow[[], Any]:
    """Compile ``pipeline`` into a Prefect flow that returns a :class:`RunSummary`.

    An operational failure (disk full, a folder held by another run...) ends the flow run
    in a Failed state with a one-line message instead of a logged traceback; the exception
    itself is appended to ``failures`` so the caller can report it (see :func:`execute`).
    """
    spec = pipeline.spec
    runner = _task_runner(pipeline)
    extra: dict[str, Any] = {"task_runner": runner} if runner is not None else {}

    @flow(
        name=spec.pipeline,
        flow_run_name=f"{spec.pipeline}-{options.run_id}",
        persist_result=False,
        log_prints=False,
        **extra,
    )
    async def pipeline_flow() -> Any:
        # local model servers live exactly as long as this flow run (see providers/local_server.py)
        local = LocalEndpoints(spec.models, spec.logprob_models())
        try:
            with local as base_urls:
                return await _process(pipeline, options, base_urls, local)
        except (*OPERATIONAL, SpecError) as exc:  # SpecError: a Dask worker found the pipeline file changed
            if failures is None:
                raise
            failures.append(exc)
            return Failed(message=error_line(exc))

    return pipeline_flow


class _SkipFailedState(logging.Filter):
    """Drops Prefect's log line of a flow run that an operational failure ended (its state keeps the message)."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__()
        self.failures = failures

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.failures and record.getMessage().startswith("Finished in state Failed"))


async def execute(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Run the pipeline's flow (in the caller's event loop; a subflow inside a running flow).

    Raises the operational failure that stopped it, as its own type, without Prefect
    printing a traceback; any other failure propagates as Prefect raises it.
    """
    failures: list[BaseException] = []
    # the caller prints the one line; Prefect's own "Finished in state Failed(...)" would say it twice
    logger = logging.getLogger("prefect.flow_runs")
    quiet = _SkipFailedState(failures)
    logger.addFilter(quiet)
    try:
        state = await build_flow(pipeline, options, failures)(return_state=True)
    finally:
        logger.removeFilter(quiet)
    if failures:
        raise failures[0]
    summary: RunSummary = await state.aresult()  # raises what the flow raised (result() is sync in a sync parent)
    return summary


async def _process(
    pipeline: LoadedPipeline, options: RunOptions, base_urls: dict[str, str], local: LocalEndpoints
) -> RunSummary:
    # one run at a time per output folder: the Run holds its lock, stores and sinks (released however it ends)
    # a scheduled run says which deployment started it (the audit trail's actor names it)
    with Run.open(pipeline, options, flow_run.get_id(), deployment.get_name()) as run:
        run.summary.notes.extend(local.notes)
        engine: Engine | None = None  # with Dask, each worker builds its own per chunk (flows/tasks.py)
        if pipeline.spec.run.task_runner == "dask":
            run_stage = _remote_runner(run, base_urls, local.model_ids)
        else:
            engine = run.engine(base_urls, local.model_ids)
            run_stage = _local_runner(engine)
        summary = await process(run, run_stage, engine)
        overview = run_overview(run.log, run.ledger, run.run_id)
        await publish_summary(summary, overview, run_profiles(run.log, run.ledger, run.run_id))
        return summary


def _local_runner(engine: Engine) -> StageRunner:
    async def run(
        stage_id: str, index: int, docs: list[Document], on_record: OnRecord
    ) -> tuple[list[Document], list[DecisionRecord]]:
        task = stage_task.with_options(task_run_name=f"{stage_id}[{index}]")
        return docs, await task(quoted(engine), stage_id, quoted(docs), quoted(on_record))

    return run


def _remote_runner(run: Run, base_urls: dict[str, str], model_ids: dict[str, str]) -> StageRunner:
    pipeline, options, summary, budget, cache = run.pipeline, run.options, run.summary, run.budget, run.cache

    async def run_remote(
        stage_id: str, index: int, docs: list[Document], on_record: OnRecord
    ) -> tuple[list[Document], list[DecisionRecord]]:
        # a worker process cannot call back here: its records come back with the chunk (run_batch stores them then)
        job = RemoteJob(
            str(pipeline.path.resolve()),
            tuple(options.overrides),
            options.run_id,
            stage_id,
            run.concurrency,
            base_urls,
            model_ids,
            budget.usd + summary.cost_usd,
            budget.tokens + summary.tokens_in + summary.tokens_out,
            str(cache.path) if cache is not None else None,
        )
        # not quoted: a quoted argument reaches a Dask worker as a plain tuple, not the documents
        future = remote_stage_task.with_options(task_run_name=f"{stage_id}[{index}]").submit(job, docs)
        result: RemoteResult = await asyncio.to_thread(future.result)  # type: ignore[arg-type]  # a future of an async task returns its value
        if isinstance(result, list):
            raise SpecError(result)  # the worker could not load the pipeline file (changed since the run started)
        return result

    return run_remote


def run_pipeline(pipeline: LoadedPipeline, options: RunOptions) -> RunSummary:
    """Compile and run ``pipeline`` against Prefect's ephemeral API or ``PREFECT_API_URL``.

    Raises :class:`~steadyflow.runner.run.ResumeError` before anything runs when
    ``options.resume`` names a run that cannot be continued, and the exceptions of
    :data:`OPERATIONAL` when the run stops on one (one line each; the run can be resumed).
    """
    if options.resume:
        check_resume(pipeline, options)
    return asyncio.run(execute(pipeline, options))
