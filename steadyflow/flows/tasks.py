"""The Prefect tasks: one stage over one chunk of documents.

``stage_task`` runs in the flow's own process and event loop, sharing the run's
engine (clients, breakers, budget, cache). ``remote_stage_task`` is what a Dask
worker process runs: it gets everything it needs as plain values, loads the
pipeline itself and builds an engine for the chunk (breakers are then per chunk,
and the run's budget is checked with what the run had spent when the chunk left).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote

from steadyflow.audit.records import DecisionRecord
from steadyflow.core.document import Document
from steadyflow.spec.errors import Problem, SpecError
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache
from steadyflow.stages.checks import load_checked
from steadyflow.stages.engine import Engine


@task(name="stage", cache_policy=NONE, persist_result=False, retries=0)
async def stage_task(
    engine: Engine, stage_id: str, docs: list[Document], on_record: Callable[[DecisionRecord], None] | None = None
) -> list[DecisionRecord]:
    """Run one stage over a chunk in the flow's process (documents are updated in place; ``on_record`` as each ends)."""
    return await engine.run_stage(stage_id, docs, on_record)


def quoted(value: Any) -> Any:
    """Keep Prefect from walking an object graph (engine, documents) when it records task inputs."""
    return quote(value)


@dataclass(frozen=True)
class RemoteJob:
    """What a Dask worker needs to run a stage: plain, picklable values only."""

    pipeline_file: str
    overrides: tuple[str, ...]
    run_id: str
    stage_id: str
    concurrency: int
    base_urls: dict[str, str] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)
    spent_usd: float = 0.0
    spent_tokens: int = 0
    cache_path: str | None = None


@lru_cache(maxsize=8)
def _pipeline(file: str, overrides: tuple[str, ...], mtime: float) -> LoadedPipeline:
    """Each worker process loads (compiles and checks, as the flow's process did) a pipeline once per file version."""
    return load_checked(file, list(overrides))


RemoteResult = tuple[list[Document], list[DecisionRecord]] | list[Problem]
"""The updated documents and their records, or why the worker could not load the pipeline (the file changed)."""


@task(name="stage", cache_policy=NONE, persist_result=False, retries=0)
async def remote_stage_task(job: RemoteJob, docs: list[Document]) -> RemoteResult:
    """Run one stage over a chunk in a worker process; return the updated documents and their records.

    A pipeline file that no longer loads comes back as its problems (the flow ends with one line), not
    as an exception Prefect would log with a traceback in the worker.
    """
    try:
        pipeline = _pipeline(job.pipeline_file, job.overrides, Path(job.pipeline_file).stat().st_mtime)
    except SpecError as exc:
        return exc.problems
    budget = Budget(pipeline.spec.budget, usd=job.spent_usd, tokens=job.spent_tokens)
    cache = OutputCache(Path(job.cache_path)) if job.cache_path else None
    # a Dask worker is already one of several processes: its checks run in it, not in processes of its own
    engine = Engine.create(
        pipeline, job.run_id, job.concurrency, job.base_urls, job.model_ids, budget, cache, check_workers=0
    )
    try:
        records = await engine.run_stage(job.stage_id, docs)
    finally:
        await engine.aclose()
        if cache is not None:
            cache.close()
    return docs, records
