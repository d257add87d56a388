"""Check workers give the same verdicts and redactions as one document at a time, on the example's tickets."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.io.sources import read_documents, source_for
from steadyflow.spec import load_pipeline
from steadyflow.spec.models import AiStage
from steadyflow.stages.engine import Engine
from steadyflow.validators.base import Context
from steadyflow.validators.inputs import PreparedInput, prepare
from steadyflow.validators.pool import CheckPool, CheckWorkerError, pool_models
from steadyflow.validators.runner import Applied, StageChecks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "support_triage.yaml"


def _tickets() -> list[Document]:
    docs = read_documents(source_for(str(ROOT / "configs" / "data" / "tickets")), ROOT)
    return [d for d in docs if d.load_error is None]


def _stage() -> AiStage:
    stage = load_pipeline(EXAMPLE).spec.stages[0]
    assert isinstance(stage, AiStage)
    return stage


def _prepared(p: PreparedInput) -> dict[str, Any]:
    """What a prepared input tells the model, the checks and the record (a verdict's time is no outcome)."""
    verdicts = [{**asdict(v), "duration_ms": None} for v in p.verdicts]
    return {
        "text": p.text,
        "doc_id": p.doc_id,
        "fields": p.fields,
        "originals": p.originals,
        "pii": p.pii,
        "injection": p.injection,
        "quarantine": p.quarantine,
        "verdicts": verdicts,
    }


def _applied(a: Applied) -> dict[str, Any]:
    verdicts = [{**asdict(v), "duration_ms": None} for v in a.verdicts]
    output = a.output.model_dump(mode="json") if a.output is not None else None
    return {"output": output, "outcome": a.outcome, "reason": a.reason, "review": a.review, "verdicts": verdicts}


def test_redaction_in_check_workers_matches_one_document_at_a_time() -> None:
    stage, docs = _stage(), _tickets()
    assert len(docs) >= 40
    alone = [_prepared(prepare(stage.input, d.text, d.id, d.fields, {})) for d in docs]

    async def batched() -> tuple[list[PreparedInput], int]:
        pool = CheckPool(2, pool_models([], [stage.input]))
        try:
            found = await asyncio.gather(*(pool.prepare(stage.input, d.text, d.id, d.fields, {}) for d in docs))
            return list(found), pool.batches
        finally:
            await pool.aclose()

    found, batches = asyncio.run(batched())
    assert batches < len(docs) / 4  # they went in batches, not one by one
    for doc, one, many in zip(docs, alone, found, strict=True):
        assert _prepared(many) == one, doc.id
    redacted = sum(1 for one in alone if one["originals"])
    assert redacted >= 10  # the example's tickets carry names, e-mails, phones: the comparison is not vacuous


def _outputs(docs: list[Document]) -> list[dict[str, Any]]:
    """Answers a model could give: raw ticket text as the summary (names, e-mails, keys, line breaks, length)."""
    categories, priorities = ["billing", "technical", "account", "shipping"], ["low", "medium", "high"]
    return [
        {"category": categories[i % 4], "priority": priorities[i % 3], "summary": doc.text[: 120 + 40 * (i % 3)] or "x"}
        for i, doc in enumerate(docs)
    ]


def test_output_checks_in_check_workers_match_one_document_at_a_time() -> None:
    pipeline = load_pipeline(EXAMPLE)
    stage, compiled = _stage(), pipeline.stages[0]
    docs, model = _tickets(), compiled.output_model
    outputs = [model.model_validate(o) for o in _outputs(docs)]
    contexts = [Context(d.text, d.id, d.fields, {"id": "run"}) for d in docs]
    inline = StageChecks(stage.validate_)
    alone = [_applied(asyncio.run(inline.apply(o, c, 0, model))) for o, c in zip(outputs, contexts, strict=True)]

    async def batched() -> tuple[list[Applied], int]:
        pool = CheckPool(2, pool_models(stage.validate_, []))
        checks = StageChecks(stage.validate_, pool)
        try:
            found = await asyncio.gather(
                *(checks.apply(o, c, 0, model) for o, c in zip(outputs, contexts, strict=True))
            )
            return list(found), pool.batches
        finally:
            await pool.aclose()

    found, batches = asyncio.run(batched())
    assert batches < len(docs) / 4
    for doc, one, many in zip(docs, alone, found, strict=True):
        assert _applied(many) == one, doc.id
    actions = {(v["check"], v["action"]) for one in alone for v in one["verdicts"]}
    assert {("pii", "fix"), ("format", "fix"), ("similar", "pass")} <= actions  # fixes happened on both sides


def _run_example(chaos: ChaosServer, workers: int) -> tuple[list[dict[str, Any]], int]:
    pipeline = load_pipeline(
        EXAMPLE, ["models.small.provider=openai", f"models.small.base_url={chaos.base_url}"], import_code=False
    )
    docs = _tickets()

    async def go() -> tuple[list[Any], int]:
        engine = Engine.create(pipeline, "run", concurrency=16, check_workers=workers)
        try:
            records = await engine.run_stage("triage", docs)
            return records, engine.pool.batches if engine.pool is not None else 0
        finally:
            await engine.aclose()

    records, batches = asyncio.run(go())
    outputs = {d.id: d.outputs.get("triage") for d in docs}
    seen = [
        {
            "doc": r.doc_id,
            "status": r.status,
            "rung": r.rung,
            "reason": r.reason,
            "output": outputs[r.doc_id],
            "verdicts": [{**asdict(v), "duration_ms": None} for v in r.verdicts],
        }
        for r in records
    ]
    return sorted(seen, key=lambda s: s["doc"]), batches


def test_the_example_ends_alike_with_and_without_check_workers(chaos: ChaosServer) -> None:
    alone, _ = _run_example(chaos, 0)
    pooled, batches = _run_example(chaos, 2)
    assert pooled == alone
    assert 0 < batches < len(alone)
    assert {s["status"] for s in alone} >= {"validated"}


class _Killer:
    """A field value whose unpickling ends the process that reads it: a document that takes its worker down."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return os._exit, (1,)


def test_a_check_worker_that_dies_costs_no_other_document() -> None:
    stage, docs = _stage(), _tickets()

    async def go() -> tuple[list[Any], int]:
        pool = CheckPool(2, pool_models([], [stage.input]))
        pool.start()
        try:
            await pool.prepare(stage.input, "warm", "w", {}, {})
            pids = list(pool._pool()._processes)
            pending = [asyncio.ensure_future(pool.prepare(stage.input, d.text, d.id, d.fields, {})) for d in docs]
            await asyncio.sleep(0.05)  # both workers have a batch now
            os.kill(pids[0], signal.SIGKILL)  # which takes every batch in flight with it
            return list(await asyncio.gather(*pending)), pool.restarts
        finally:
            await pool.aclose()

    found, restarts = asyncio.run(go())
    assert restarts >= 1
    alone = [_prepared(prepare(stage.input, d.text, d.id, d.fields, {})) for d in docs]
    assert [_prepared(f) for f in found] == alone  # each document of the lost batches ran again, alone


def test_only_the_document_that_kills_its_worker_is_lost_to_it() -> None:
    stage, docs = _stage(), _tickets()[:12]
    killer = 5

    async def go() -> list[Any]:
        pool = CheckPool(2, pool_models([], [stage.input]))
        pool.start()
        try:
            jobs = [
                pool.prepare(stage.input, d.text, d.id, {"x": _Killer()} if i == killer else d.fields, {})
                for i, d in enumerate(docs)
            ]
            return list(await asyncio.gather(*jobs, return_exceptions=True))
        finally:
            await pool.aclose()

    found = asyncio.run(go())
    error = found[killer]
    assert isinstance(error, CheckWorkerError) and error.error_type == "CheckWorkerDied"
    others = [f for i, f in enumerate(found) if i != killer]
    alone = [_prepared(prepare(stage.input, d.text, d.id, d.fields, {})) for i, d in enumerate(docs) if i != killer]
    assert [_prepared(f) for f in others] == alone


def test_workers_that_cannot_load_their_models_say_why_for_each_document() -> None:
    stage = _stage()

    async def go() -> list[Any]:
        pool = CheckPool(1, frozenset({"no-such-model"}))
        pool.start()
        try:
            jobs = [pool.prepare(stage.input, f"text {i}", f"d{i}", {}, {}) for i in range(3)]
            return list(await asyncio.gather(*jobs, return_exceptions=True))
        finally:
            await pool.aclose()

    found = asyncio.run(go())
    assert all(isinstance(f, CheckWorkerError) and f.error_type == "ValueError" for f in found)
    assert "text 0" not in str(found[0])  # the reason names the error, never the document


def test_closing_the_pool_ends_every_waiting_document() -> None:
    stage, docs = _stage(), _tickets() * 3  # more than one worker's batch: some are still waiting at the close

    async def go() -> list[Any]:
        pool = CheckPool(1, pool_models([], [stage.input]))
        pool.start()
        pending = [asyncio.ensure_future(pool.prepare(stage.input, d.text, d.id, d.fields, {})) for d in docs]
        await asyncio.sleep(0.01)
        await pool.aclose()
        return list(await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 60))

    found = asyncio.run(go())
    assert len(found) == len(docs)
    assert all(isinstance(f, PreparedInput | CheckWorkerError) for f in found)
    assert any(isinstance(f, CheckWorkerError) for f in found)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pipeline_without_heavy_checks_starts_no_workers(chaos: ChaosServer, workers: int) -> None:
    pipeline = load_pipeline(
        ROOT / "benchmarks" / "pipelines" / "throughput.yaml", [f"models.m.base_url={chaos.base_url}"]
    )

    async def go() -> Any:
        engine = Engine.create(pipeline, "run", concurrency=4, check_workers=workers)
        await engine.aclose()
        return engine.pool

    assert asyncio.run(go()) is None
