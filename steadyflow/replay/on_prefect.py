"""A replay as a Prefect flow (``steadyflow replay --prefect``): its report published as a markdown artifact.

The same documents, candidate and comparison as :func:`steadyflow.replay.runner.replay_run`, run as
one flow run (one task, ``replay[0]``), with the report as an artifact keyed
``steadyflow-replay-<pipeline>``, next to the pipeline's evaluations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steadyflow.replay.recorded import RecordedRun
from steadyflow.replay.report import markdown
from steadyflow.replay.runner import Replay, replay_run

if TYPE_CHECKING:
    from steadyflow.api import Pipeline


async def replay_on_prefect(
    recorded: RecordedRun, pipeline: Pipeline, sample: int | None, dataset: Path | None, concurrency: int
) -> Replay:
    """Replay in a Prefect flow run; raises what the flow raises (Prefect's own errors included)."""
    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()  # before Prefect is imported
    from steadyflow.flows.evaluation import run_on_prefect

    async def whole() -> Replay:
        return await replay_run(recorded, pipeline, sample, dataset, concurrency)

    def finish(results: list[Any]) -> tuple[Replay, str]:
        replay: Replay = results[0]
        return replay, markdown(replay.as_dict())

    return await run_on_prefect(pipeline.name, [whole], finish, kind="replay")
