"""``steadyflow eval --prefect`` and ``replay --prefect``: as a Prefect flow, the report as a markdown artifact.

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


def eval_key(pipeline: str, kind: str = "eval") -> str:
    """One artifact key per pipeline (and kind) keeps the history of its reports (lowercase, digits, dashes)."""
    return f"steadyflow-{kind}-" + re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")


async def run_on_prefect(
    pipeline: str,
    chunks: list[Callable[[], Awaitable[Any]]],
    finish: Callable[[list[Any]], tuple[T, str]],
    kind: str = "eval",
) -> T:
    """Run ``chunks`` as the tasks of one flow run, ``finish`` their results, publish its markdown; its value.

    ``kind`` ('eval' or 'replay') names the flow, its tasks and the artifact's key.
    """

    @task(name=kind, task_run_name=f"{kind}[{{index}}]", persist_result=False)
    async def chunk(index: int) -> Any:
        return await chunks[index]()

    @flow(name=f"{kind}-{pipeline}", persist_result=False, log_prints=False)
    async def evaluation() -> T:
        results = await asyncio.gather(*(chunk(i) for i in range(len(chunks))))
        value, markdown = finish(list(results))
        await acreate_markdown_artifact(
            markdown=markdown, key=eval_key(pipeline, kind), description=f"steadyflow {kind} of {pipeline}"
        )
        return value

    return await evaluation()
