"""Run a pipeline over a labelled dataset and score it: what ``steadyflow eval`` does, from Python too.

Documents go through :meth:`steadyflow.api.Pipeline.process`, concurrently, without Prefect and
without writing anything: the same stages, ladder and checks a run uses, on the pipeline's own
models (or those ``--set`` points elsewhere)::

    pipeline = steadyflow.load("configs/support_triage.yaml")
    evaluation = await run_dataset(pipeline, read_dataset(pipeline, Path("labelled.jsonl")))
    await pipeline.aclose()
    evaluation.as_dict()["fields"]["triage.category"]["accuracy"]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steadyflow.core.vocabulary import ended_by
from steadyflow.evals.dataset import Dataset, DatasetError, load_dataset
from steadyflow.evals.scorers import Scorer
from steadyflow.evals.scoring import Evaluation, Outcome, evaluate, scorers_for
from steadyflow.io.limits import printable
from steadyflow.spec.output_schema import schema_options

if TYPE_CHECKING:
    from steadyflow.api import Pipeline, Processed


def outcome_of(processed: Processed) -> Outcome:
    """The facts scoring needs from one processed document."""
    records = processed.records
    return Outcome(
        id=processed.id,
        outputs=dict(processed.outputs),
        ended_by={r.stage_id: ended_by(r.status, r.rung_label) for r in records},
        models={r.stage_id: r.model for r in records},
        confidence={r.stage_id: dict(r.confidence or {}) for r in records},
        review=processed.review,
        quarantined=processed.quarantined,
        reason=processed.reason,
        cost_usd=processed.cost_usd,
        latency_ms=sum(r.latency_ms for r in records),
    )


def output_schemas(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Each stage's output JSON schema, by stage id."""
    return {stage.id: stage.output_model.model_json_schema() for stage in pipeline.loaded.stages}


def read_dataset(pipeline: Pipeline, path: Path, stage: str | None = None) -> Dataset:
    """The dataset at ``path`` for this pipeline; raises DatasetError, or ValueError for an unknown stage."""
    if stage is not None and stage not in pipeline.stages:
        raise ValueError(f"no stage '{stage}' in {pipeline.path} (stages: {', '.join(pipeline.stages)})")
    dataset = load_dataset(path, pipeline.stages, stage)
    schemas = output_schemas(pipeline)
    unknown = unlabelable(dataset, schemas)
    if unknown:
        raise DatasetError(
            f"{path}: labels for what the pipeline does not output: {', '.join(unknown)} "
            f"(stages: {', '.join(pipeline.stages)})"
        )
    outside = outside_enums(dataset, schemas)
    if outside:
        raise DatasetError(f"{path}: labels no answer can match: {'; '.join(outside[:5])}")
    return dataset


def outside_enums(dataset: Dataset, schemas: dict[str, dict[str, Any]]) -> list[str]:
    """'example id: stage.field is X, not one of [...]' for labels of enum fields outside the enum (a typo)."""
    found = []
    for example in dataset.examples:
        for stage, fields in example.expected.items():
            properties = schemas.get(stage, {}).get("properties", {})
            for name, value in fields.items():
                options = schema_options(properties.get(name) if isinstance(properties, dict) else None)
                allowed = [v for o in options for v in o.get("enum", [])]
                nullable = any(o.get("type") == "null" for o in options)
                if allowed and value not in allowed and not (value is None and nullable):
                    label = printable(json.dumps(value, ensure_ascii=False)[:40])
                    found.append(f"{printable(example.id)}: {stage}.{name} is {label}, not one of {allowed}")
    return found


def unlabelable(dataset: Dataset, schemas: dict[str, dict[str, Any]]) -> list[str]:
    """Labelled ``stage.field`` names whose stage is not in ``schemas`` or whose stage has no such output field.

    Such a label could only ever score 0: a misspelt stage or field, or a dataset for another pipeline.
    """
    unknown = set()
    for example in dataset.examples:
        for stage, fields in example.expected.items():
            properties = schemas.get(stage, {}).get("properties")
            for name in fields:
                if stage not in schemas or (isinstance(properties, dict) and name.split(".", 1)[0] not in properties):
                    unknown.add(f"{stage}.{name}")
    return sorted(unknown)


def pipeline_scorers(pipeline: Pipeline, dataset: Dataset) -> dict[str, tuple[str, Scorer, list[str] | None]]:
    """Every labelled field's scorer: the dataset's, else the pipeline's ``eval:`` section, else its type's."""
    declared = pipeline.loaded.spec.eval.scorers if pipeline.loaded.spec.eval else {}
    return scorers_for(dataset, output_schemas(pipeline), declared)


async def run_dataset(
    pipeline: Pipeline,
    dataset: Dataset,
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Process every example (at most ``concurrency`` at once) and score the outcomes.

    Scorers are resolved first, so a bad scorer name fails before any model is called.
    """
    scorers = pipeline_scorers(pipeline, dataset)
    done = 0
    outcomes: dict[str, Outcome] = {}

    pending = iter(dataset.examples)

    async def worker() -> None:  # a task per worker, not per example: 1M tasks at once held gigabytes
        nonlocal done
        for example in pending:
            processed = await pipeline.process(dict(example.document), id=example.id)
            outcomes[example.id] = outcome_of(processed)
            done += 1
            if progress is not None:
                progress(done, len(dataset.examples))

    await pipeline.start()  # the local model servers come up before the clock starts
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(dataset.examples))))))
    evaluation = evaluate(dataset, outcomes, scorers, (pipeline.name, pipeline.version))
    evaluation.duration_s = time.perf_counter() - started
    return evaluation
