"""An evaluation as a Prefect flow (``steadyflow eval --prefect``): chunks as tasks, the report as an artifact.

For datasets large enough to watch in the Prefect UI: the same documents, checks and scores as
:func:`steadyflow.evals.runner.run_dataset`, run as one flow run whose tasks are chunks of the
dataset, with the markdown report published as an artifact (key ``steadyflow-eval-<pipeline>``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from steadyflow.evals.dataset import Dataset, Example
from steadyflow.evals.report import markdown
from steadyflow.evals.runner import outcome_of, pipeline_scorers
from steadyflow.evals.scoring import Evaluation, Outcome, evaluate

if TYPE_CHECKING:
    from steadyflow.api import Pipeline


async def run_dataset_on_prefect(
    pipeline: Pipeline, dataset: Dataset, concurrency: int = 8, chunk_size: int = 50
) -> Evaluation:
    """Score the dataset in a Prefect flow run; raises what the flow raises (Prefect's own errors included)."""
    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()  # before Prefect is imported
    from steadyflow.flows.evaluation import run_on_prefect

    scorers = pipeline_scorers(pipeline, dataset)
    gate = asyncio.Semaphore(max(1, concurrency))
    size = max(1, chunk_size)
    parts = [dataset.examples[i : i + size] for i in range(0, len(dataset.examples), size)]

    async def one(example: Example) -> Outcome:
        async with gate:
            return outcome_of(await pipeline.process(dict(example.document), id=example.id))

    def chunk_of(part: list[Example]) -> Any:
        async def run() -> list[Outcome]:
            return list(await asyncio.gather(*(one(e) for e in part)))

        return run

    def finish(results: list[Any]) -> tuple[Evaluation, str]:
        outcomes = {o.id: o for part in results for o in part}
        evaluation = evaluate(dataset, outcomes, scorers, (pipeline.name, pipeline.version))
        return evaluation, markdown(evaluation)

    return await run_on_prefect(pipeline.name, [chunk_of(p) for p in parts], finish)
