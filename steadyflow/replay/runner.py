"""Replay a recorded run through a candidate pipeline: what ``steadyflow replay`` does, from Python too.

The run's documents are read again from the source the run kept, each checked against the hash
its records hold (a changed or missing input is listed, never used), and processed by the
candidate with :meth:`steadyflow.api.Pipeline.process`: no Prefect, nothing written, the same
stages, ladder and checks a run uses. Each candidate output is fingerprinted with the recorded
folder's key, so it can be compared with what the run recorded, field by field::

    recorded = open_recorded(Path("out"), "last")
    replay = await replay_run(recorded, steadyflow.load("candidate.yaml"), sample=100)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steadyflow.audit.log import DecisionLog
from steadyflow.audit.records import document_hash, fingerprint
from steadyflow.core.document import Document
from steadyflow.core.vocabulary import ended_by
from steadyflow.evals.dataset import load_dataset
from steadyflow.evals.scorers import Scorer, default_scorer, scorer
from steadyflow.io.limits import printable
from steadyflow.io.sources import read_documents
from steadyflow.providers.confidence import scored_fields
from steadyflow.replay.compare import Comparison
from steadyflow.replay.recorded import RecordedDoc, RecordedRun, ReplayError, Side, side_of
from steadyflow.runner.review import sink_rows
from steadyflow.runner.shadow import shadow_log_path, shadow_rows_path

if TYPE_CHECKING:
    from steadyflow.api import Pipeline, Processed


@dataclass
class Replay:
    """A replay's result: the comparison, and the documents it could not use."""

    run_id: str
    folder: str
    recorded_pipeline: dict[str, Any]
    candidate_pipeline: dict[str, Any]
    comparison: Comparison
    sampled: int = 0
    changed_inputs: list[str] = field(default_factory=list)
    """Ids of documents whose text or fields changed since the run."""
    missing_inputs: list[str] = field(default_factory=list)
    """Recorded documents the source no longer holds, by key and place ('3f2a... (line 12)'): their ids are gone."""
    unverifiable: int = 0
    """Documents recorded before document hashes were kept: not replayed."""
    not_comparable: int = 0
    """Documents whose recorded outputs are known neither by fingerprint nor from the sink."""
    labels: str | None = None
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Everything the report and ``--json`` show."""
        return {
            "run_id": self.run_id,
            "folder": self.folder,
            "recorded_pipeline": self.recorded_pipeline,
            "candidate_pipeline": self.candidate_pipeline,
            "sampled": self.sampled,
            "inputs": {
                "changed": self.changed_inputs,
                "missing": self.missing_inputs,
                "unverifiable": self.unverifiable,
                "not_comparable": self.not_comparable,
            },
            "labels": self.labels,
            "duration_s": round(self.duration_s, 3),
            **self.comparison.as_dict(),
        }


def sample_keys(recorded: RecordedRun, sample: int | None) -> list[str]:
    """The documents to replay: all, or ``sample`` of them chosen by key (keys are HMACs: a fair, repeatable draw)."""
    keys = sorted(recorded.docs)
    return keys if sample is None else keys[:sample]


def _closed(pipeline: Pipeline) -> dict[str, list[str]]:
    return {stage.id: scored_fields(stage.output_model.model_json_schema()) for stage in pipeline.loaded.stages}


def candidate_side(processed: Processed, closed: dict[str, list[str]], digest: Callable[[str], str]) -> Side:
    """The candidate's side of a document, fingerprinted with the recorded folder's key."""
    return Side(
        fingerprints={
            stage: fingerprint(out, closed.get(stage, []), digest) for stage, out in processed.outputs.items()
        }
        if not processed.quarantined
        else {},
        outputs=dict(processed.outputs),
        quarantined=processed.quarantined,
        rungs={r.stage_id: ended_by(r.status, r.rung_label) for r in processed.records},
        cost_usd=processed.cost_usd,
        tokens=processed.tokens,
        latency_ms=sum(r.latency_ms for r in processed.records),
        review=processed.review,
    )


def _documents(recorded: RecordedRun, wanted: set[str], result: Replay) -> Iterator[tuple[RecordedDoc, Document]]:
    """The wanted documents read again from the run's source, each verified against its recorded hash."""
    seen: set[str] = set()
    for doc in read_documents(recorded.source(), Path("/")):
        key = recorded.log.key(doc.id)
        if key not in wanted or key in seen:
            continue
        seen.add(key)
        kept = recorded.docs[key]
        if kept.document_hash is None:
            result.unverifiable += 1
        elif kept.document_hash != document_hash(doc.text, doc.fields):
            result.changed_inputs.append(printable(doc.id))  # read just now: the id the user knows it by
        else:
            yield kept, doc
    result.missing_inputs = [f"{k} ({recorded.docs[k].source_ref or 'file'})" for k in sorted(wanted - seen)]


def _recorded_side(doc: RecordedDoc, closed: dict[str, list[str]], digest: Callable[[str], str]) -> Side | None:
    """The recorded side, fingerprints made from the sink's outputs where the records kept none (a Dask run)."""
    side = doc.side
    if side.quarantined or side.fingerprints:
        return side
    if side.outputs is None:
        return None
    side.fingerprints = {stage: fingerprint(out, closed.get(stage, []), digest) for stage, out in side.outputs.items()}
    return side


def labels_of(
    pipeline: Pipeline, recorded: RecordedRun, dataset: Path | None
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Scorer], str | None]:
    """Expected outputs by key (a labelled dataset's, else what reviewers decided), the scorers, and their origin."""
    schemas = {stage.id: stage.output_model.model_json_schema() for stage in pipeline.loaded.stages}
    declared = pipeline.loaded.spec.eval.scorers if pipeline.loaded.spec.eval else {}
    named: dict[str, str] = {}
    origin: str | None
    if dataset is not None:
        data = load_dataset(dataset, pipeline.stages)
        expected = {recorded.log.key(e.id): e.expected for e in data.examples}
        named, origin = data.scorers, str(dataset)
    else:
        expected, origin = recorded.reviewed, ("reviewed outputs" if recorded.reviewed else None)
    scorers = {}
    for fields in expected.values():
        for stage, values in fields.items():
            for name in values:
                key = f"{stage}.{name}"
                if key not in scorers and stage in schemas:
                    prop = schemas[stage].get("properties", {}).get(name.split(".", 1)[0], {})
                    scorers[key] = scorer(named.get(key) or declared.get(key) or default_scorer(prop))
    return expected, scorers, origin


def shadow_sides(recorded: RecordedRun) -> tuple[dict[str, Side], dict[str, Any]]:
    """The candidate's sides a shadow run of this run recorded (``run --shadow``), by key; ReplayError if none."""
    path = shadow_log_path(recorded.folder)
    if not path.is_file():
        raise ReplayError(f"{recorded.folder}: no shadow store (run with --shadow candidate.yaml first)")
    shadow = DecisionLog(path, readonly=True)
    try:
        by_key: dict[str, list[dict[str, Any]]] = {}
        named: dict[str, Any] = {}
        for record in shadow.records(recorded.run_id):
            by_key.setdefault(record["doc_id"], []).append(record)
            named = {"pipeline": record["pipeline"], "version": record["pipeline_version"]}
        sides = {key: side_of(records) for key, records in by_key.items()}
        for row in sink_rows(shadow_rows_path(recorded.folder, recorded.run_id)):
            side = sides.get(shadow.key(row["id"]))
            if side is not None and not side.quarantined:
                side.outputs = dict(row.get("outputs") or {})
    finally:
        shadow.close()
    if not sides:
        raise ReplayError(f"{recorded.folder}: the shadow store holds nothing of run {recorded.run_id}")
    return sides, named


def replay_shadow(recorded: RecordedRun, pipeline: Pipeline | None, dataset: Path | None = None) -> Replay:
    """Compare a run with what its shadow candidate made of the same documents; no model is called.

    ``pipeline`` (the candidate file) only chooses the scorers for labels or reviews; without it, no accuracy.
    """
    sides, named = shadow_sides(recorded)
    expected, scorers, origin = labels_of(pipeline, recorded, dataset) if pipeline is not None else ({}, {}, None)
    result = Replay(
        recorded.run_id,
        str(recorded.folder),
        {"pipeline": recorded.info.get("pipeline"), "version": recorded.info.get("pipeline_version")},
        {**named, "file": f"its shadow ({shadow_log_path(recorded.folder).parent})"},
        Comparison(),
        sampled=len(sides),
        labels=origin,
    )
    for key, new in sorted(sides.items()):
        kept = recorded.docs.get(key)
        if kept is None:
            result.missing_inputs.append(f"{key} (in the shadow only)")
            continue
        result.comparison.add(kept.side, new, expected.get(key), scorers)
    return result


async def replay_run(
    recorded: RecordedRun,
    pipeline: Pipeline,
    sample: int | None = None,
    dataset: Path | None = None,
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    """Replay the run's documents (or a sample) through ``pipeline`` and compare; the caller closes both."""
    expected, scorers, origin = labels_of(pipeline, recorded, dataset)
    wanted = sample_keys(recorded, sample)
    result = Replay(
        recorded.run_id,
        str(recorded.folder),
        {"pipeline": recorded.info.get("pipeline"), "version": recorded.info.get("pipeline_version")},
        {"pipeline": pipeline.name, "version": pipeline.version, "file": str(pipeline.path)},
        Comparison(),
        sampled=len(wanted),
        labels=origin,
    )
    closed, digest = _closed(pipeline), recorded.log.digest
    pending = _documents(recorded, set(wanted), result)
    done = 0

    async def worker() -> None:
        nonlocal done
        for kept, doc in pending:
            old = _recorded_side(kept, closed, digest)
            processed = await pipeline.process(doc)
            if old is None:
                result.not_comparable += 1
            else:
                new = candidate_side(processed, closed, digest)
                result.comparison.add(old, new, expected.get(kept.key), scorers)
            done += 1
            if progress is not None:
                progress(done, len(wanted))

    await pipeline.start()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(wanted) or 1)))))
    result.duration_s = time.perf_counter() - started
    return result
