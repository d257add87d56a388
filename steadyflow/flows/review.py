"""``steadyflow review FILE --prefect``: review in the Prefect UI, one paused form per flagged document.

The flow pauses on each document with a form (Prefect's ``pause_flow_run(wait_for_input=...)``):
the reviewer's name, accept / correct / skip, and one field per output field, filled with the
output as it is (enums as choices). The form's description shows the document's id, source and
the rung that answered; never its text, which would then be stored by the Prefect server. The
decision goes through :func:`steadyflow.runner.review.decide`, like a terminal review.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from prefect import flow
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import create_model

from steadyflow.runner.review import Flagged, ReviewError, decide
from steadyflow.spec.loader import LoadedPipeline

logger = logging.getLogger("steadyflow.review")
Decision = Literal["accept", "correct", "skip"]


def _form(pipeline: LoadedPipeline, item: Flagged) -> tuple[type[RunInput], dict[str, Any]]:
    """The form's model (``stage__field`` for each output field) and its initial values."""
    schemas = {stage.id: stage.output_model.model_json_schema() for stage in pipeline.stages}
    fields: dict[str, Any] = {"reviewer": (str, ...), "decision": (Decision, "accept")}
    initial: dict[str, Any] = {"decision": "accept"}
    for stage, output in item.outputs.items():
        properties = schemas.get(stage, {}).get("properties", {})
        for name, value in output.items():
            choices = properties.get(name, {}).get("enum")
            kind: Any = Literal[tuple(choices)] if choices else Any
            fields[f"{stage}__{name}"] = (kind, value)
            initial[f"{stage}__{name}"] = value
    return create_model("ReviewDecision", __base__=RunInput, **fields), initial


def _description(item: Flagged, number: int, total: int) -> str:
    rows = [
        f"| {stage} | {item.rungs.get(stage, '?')} | `{json.dumps(out, ensure_ascii=False)}` |"
        for stage, out in item.outputs.items()
    ]
    return "\n".join(
        [
            f"### Review {number} of {total}: `{item.id}`",
            "",
            f"Source: `{item.source}`",
            "",
            "| stage | answered by | output |",
            "|---|---|---|",
            *rows,
            "",
            "Accept it, or correct the fields below and choose *correct*.",
        ]
    )


async def review_on_prefect(
    pipeline: LoadedPipeline, folder: Any, items: list[Flagged], timeout_s: int = 3600, poll_s: int = 5
) -> int:
    """Pause once per flagged document until a person answers in the UI; how many were decided."""

    @flow(name=f"review-{pipeline.spec.pipeline}", persist_result=False, log_prints=False)
    async def review_flow() -> int:
        decided = 0
        for number, item in enumerate(items, 1):
            form, initial = _form(pipeline, item)
            described = form.with_initial_data(description=_description(item, number, len(items)), **initial)
            given = await apause_flow_run(
                wait_for_input=described, timeout=timeout_s, poll_interval=poll_s, key=f"review-{number}"
            )
            answer = given.model_dump()  # the form's fields are made per document, so read them as a dict
            if answer["decision"] == "skip":
                continue
            corrected = None
            if answer["decision"] == "correct":
                corrected = {
                    stage: {name: answer[f"{stage}__{name}"] for name in out} for stage, out in item.outputs.items()
                }
            try:
                decide(pipeline, folder, item, answer["reviewer"], corrected)
            except ReviewError as exc:
                logger.warning("review of document %d of %d not recorded: %s", number, len(items), exc)
                continue
            decided += 1
        return decided

    return await review_flow()
