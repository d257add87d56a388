"""``steadyflow eval --prefect``: an evaluation as a Prefect flow, its report as a markdown artifact.

The flow knows nothing of scoring: it runs the evaluation's chunks as tasks (``eval[0]``,
``eval[1]``... in the UI), hands their results to ``finish``, and publishes the markdown that
returns next to the flow run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact

T = TypeVar("T")


def eval_key(pipeline: str) -> str:
    """One artifact key per pipeline keeps the history of its evaluations (lowercase, digits, dashes)."""
    return "steadyflow-eval-" + re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")


async def run_on_prefect(
    pipeline: str, chunks: list[Callable[[], Awaitable[Any]]], finish: Callable[[list[Any]], tuple[T, str]]
) -> T:
    """Run ``chunks`` as the tasks of one flow run, ``finish`` their results, publish its markdown; its value."""

    @task(name="eval", task_run_name="eval[{index}]", persist_result=False)
    async def chunk(index: int) -> Any:
        return await chunks[index]()

    @flow(name=f"eval-{pipeline}", persist_result=False, log_prints=False)
    async def evaluation() -> T:
        results = await asyncio.gather(*(chunk(i) for i in range(len(chunks))))
        value, markdown = finish(list(results))
        await acreate_markdown_artifact(
            markdown=markdown, key=eval_key(pipeline), description=f"steadyflow eval of {pipeline}"
        )
        return value

    return await evaluation()
