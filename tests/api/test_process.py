"""The Python API without Prefect: load a pipeline, process documents one by one, read their decision records."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import steadyflow
from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec.errors import SpecError
from tests.conftest import ROOT, triage_pipeline


def on_chaos(server: ChaosServer) -> list[str]:
    return ["models.small.provider=openai", f"models.small.base_url={server.base_url}"]


async def test_process_runs_the_whole_sandwich_and_returns_output_status_and_record(chaos: ChaosServer) -> None:
    async with steadyflow.load(ROOT / "configs" / "support_triage.yaml", on_chaos(chaos)) as pipeline:
        assert (pipeline.name, pipeline.version, pipeline.stages) == ("support-triage", "1.0.0", ["triage"])
        result = await pipeline.process("I was charged twice for my subscription, please refund the invoice.")
    assert result.status == "validated" and result.rung == "model:small" and not result.quarantined
    assert result.output is not None and result.output["category"] in {"billing", "technical", "account", "shipping"}
    assert result.outputs == {"triage": result.output}
    (record,) = result.records  # one per stage, as a run stores it
    assert (record.run_id, record.stage_id, record.pipeline, record.pipeline_version) == (
        pipeline.run_id,
        "triage",
        "support-triage",
        "1.0.0",
    )
    assert record.rung_label == "model:small" and record.prompt_version and record.model
    assert record.attempts and record.attempts[-1].ok and record.input_hash
    checks = {v.check for v in record.verdicts}
    assert {"pii", "secrets", "format", "rule", "similar"} <= checks, checks
    assert result.tokens == record.tokens_in + record.tokens_out > 0


async def test_hostile_documents_come_back_quarantined_with_a_reason_never_raised(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    path = triage_pipeline(tmp_path / "p.yaml", "hostile", chaos.base_url, "")
    secret = "SECRET-TEXT-4711"
    async with steadyflow.load(path) as pipeline:
        results = await asyncio.gather(
            pipeline.process(f"{secret}\x00\x01binary"),
            pipeline.process("   "),
            pipeline.process({"id": "no-text", "subject": secret}),
            pipeline.process(Document("big", secret * 10_000, "test")),
        )
        fine = await pipeline.process({"id": "T-1", "body": "the app crashes at start"})
    reasons = [(r.id, r.status, r.stage, r.reason) for r in results]
    assert all(r.quarantined and r.output is None and r.stage == "triage" and r.reason for r in results), reasons
    assert [r.reason for r in results][:2] == ["binary content (NUL bytes)", "empty document"]
    assert results[2].id == "no-text" and "no 'text'" in (results[2].reason or "")
    assert (results[3].reason or "").startswith("too large")
    assert all(secret not in json.dumps(r.reason) for r in results)  # reasons never quote the document
    assert fine.id == "T-1" and fine.status == "validated" and fine.output is not None


async def test_clients_are_reused_across_calls_and_closed(chaos: ChaosServer, tmp_path: Path) -> None:
    pipeline = steadyflow.load(triage_pipeline(tmp_path / "p.yaml", "reuse", chaos.base_url))
    first = await pipeline.process("the app crashes")
    engine = pipeline._engine
    second = await pipeline.process("my invoice is wrong")
    assert engine is not None and pipeline._engine is engine  # one engine, one client pool, for every call
    assert first.records[0].run_id == second.records[0].run_id == pipeline.run_id
    assert (first.id, second.id) == ("doc-1", "doc-2")
    await pipeline.aclose()
    assert pipeline._engine is None
    third = await pipeline.process("again, after closing")  # opens a fresh engine
    assert third.status == "validated"
    await pipeline.aclose()


def test_process_in_a_second_event_loop_is_refused_with_a_clear_error(chaos: ChaosServer, tmp_path: Path) -> None:
    pipeline = steadyflow.load(triage_pipeline(tmp_path / "p.yaml", "loops", chaos.base_url))
    assert asyncio.run(pipeline.process("the app crashes")).status == "validated"
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(pipeline.process("again"))


def test_load_raises_every_problem_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: x\nstages:\n  - {id: a, kind: ai, ladder: [{model: nope}]}\n")
    with pytest.raises(SpecError) as caught:
        steadyflow.load(bad)
    assert caught.value.problems and all(str(p).startswith(str(bad)) for p in caught.value.problems)


def test_run_from_a_running_event_loop_points_to_arun(tmp_path: Path) -> None:
    pipeline = steadyflow.load(triage_pipeline(tmp_path / "p.yaml", "sync", "http://127.0.0.1:9/v1"))

    async def inside() -> None:
        pipeline.run()

    with pytest.raises(RuntimeError, match=r"await pipeline\.arun"):
        asyncio.run(inside())


def test_import_steadyflow_is_cheap_and_names_load_on_use() -> None:
    code = (
        "import sys, steadyflow\n"
        "heavy = [m for m in ('prefect', 'pydantic', 'openai', 'instructor', 'guardrails', 'presidio_analyzer') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(steadyflow.load) and callable(steadyflow.validator) and callable(steadyflow.estimator)\n"
        "assert callable(steadyflow.stage)\n"
        "assert 'prefect' not in sys.modules, 'the API itself must not import Prefect'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_package_is_typed() -> None:
    assert (Path(steadyflow.__file__).parent / "py.typed").is_file()
    with pytest.raises(AttributeError):
        _ = steadyflow.no_such_name  # type: ignore[attr-defined]
