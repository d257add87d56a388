"""The confidence check over real HTTP: the endpoint's token log-probabilities decide escalate, review or accept."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import steadyflow
from steadyflow.api import Processed
from steadyflow.audit.log import DecisionLog
from steadyflow.chaos.server import ChaosServer
from steadyflow.runner.run import RunOptions
from steadyflow.spec.loader import load_pipeline
from tests.conftest import batch_without_prefect

DEFAULT = "{default: {category: technical}, review: true}"


def pipeline_file(
    tmp_path: Path,
    server: ChaosServer,
    check: str | None = "{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: escalate}",
    ladder: str = f"[{{model: m, reasks: 0, retries: 0}}, {DEFAULT}]",
    model: str = "mode: json_schema",
) -> Path:
    validate = f"    validate: [{check}]\n" if check else ""
    path = tmp_path / "p.yaml"
    path.write_text(f"""
pipeline: confident
models:
  m: {{provider: openai, base_url: "{server.base_url}", {model}}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
{validate}    ladder: {ladder}
""")
    return path


def script(server: ChaosServer, *plans: dict[str, Any]) -> None:
    base = server.base_url.removesuffix("/v1")
    request = urllib.request.Request(f"{base}/_chaos/script", data=json.dumps(plans).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["queued"] == len(plans)


def sent(server: ChaosServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.base_url.removesuffix('/v1')}/_chaos/requests", timeout=10) as response:
        return list(json.load(response))


async def process(path: Path, text: str = "I was charged twice, refund the invoice") -> Processed:
    pipeline = steadyflow.load(path)
    try:
        return await pipeline.process(text)
    finally:
        await pipeline.aclose()


def failed_checks(result: Processed) -> list[tuple[str, str, int, str]]:
    (record,) = result.records
    return [(v.check, v.action, v.rung, v.message or "") for v in record.verdicts if not v.passed]


async def test_an_unsure_answer_escalates_to_the_next_rung(chaos: ChaosServer, tmp_path: Path) -> None:
    script(chaos, {"content": {"category": "billing"}, "logprob": -1.0})  # exp(-1) = 0.37 < 0.8
    result = await process(pipeline_file(tmp_path, chaos))
    assert (result.rung, result.status, result.output) == ("default", "default", {"category": "technical"})
    assert result.review  # the default rung flags it, as a default always does
    failed = failed_checks(result)
    assert [(check, action, rung) for check, action, rung, _ in failed] == [("confidence", "escalate", 0)]
    assert failed[0][3] == "confidence of 'category' 0.37 < 0.8"
    assert result.records[0].confidence is None  # the accepted output is the default's: no model answer
    (request,) = sent(chaos)
    assert request["logprobs"] is True  # asked for because the stage has a confidence check


async def test_on_fail_review_keeps_the_answer_and_flags_it(chaos: ChaosServer, tmp_path: Path) -> None:
    script(chaos, {"content": {"category": "billing"}, "logprob": -0.05})
    check = "{layer: semantic, check: confidence, field: category, min: 0.99, on_fail: review}"
    result = await process(pipeline_file(tmp_path, chaos, check))
    assert (result.rung, result.status, result.output) == ("model:m", "validated", {"category": "billing"})
    assert result.review and not result.quarantined
    (record,) = result.records
    assert record.review
    assert record.confidence is not None
    assert record.confidence["category"] == pytest.approx(math.exp(-0.05), abs=1e-6)
    assert round(record.confidence["category"], 4) == 0.9512
    assert [(check, action) for check, action, _, _ in failed_checks(result)] == [("confidence", "review")]
    assert len(sent(chaos)) == 1  # review is no re-ask


async def test_a_sure_answer_is_accepted_without_review(chaos: ChaosServer, tmp_path: Path) -> None:
    script(chaos, {"content": {"category": "technical"}, "logprob": -0.01})
    check = "{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}"
    result = await process(pipeline_file(tmp_path, chaos, check), "the app crashes")
    assert (result.rung, result.output, result.review) == ("model:m", {"category": "technical"}, False)
    assert failed_checks(result) == []
    (record,) = result.records
    assert record.confidence == {"category": pytest.approx(math.exp(-0.01), abs=1e-6)}
    assert any(v.check == "confidence" and v.passed for v in record.verdicts)


async def test_the_threshold_is_inclusive_and_on_fail_quarantine_quarantines(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    at = "{layer: semantic, check: confidence, field: category, min: 0.5, on_fail: quarantine}"
    script(chaos, {"content": {"category": "billing"}, "logprob": math.log(0.5)})
    assert (await process(pipeline_file(tmp_path, chaos, at))).rung == "model:m"
    script(chaos, {"content": {"category": "billing"}, "logprob": math.log(0.49)})
    below = await process(pipeline_file(tmp_path, chaos, at))
    assert below.quarantined and below.output is None
    assert [(c, a) for c, a, _, _ in failed_checks(below)] == [("confidence", "quarantine")]


async def test_on_fail_noop_records_the_failure_and_accepts(chaos: ChaosServer, tmp_path: Path) -> None:
    script(chaos, {"content": {"category": "billing"}, "logprob": -2.0})
    check = "{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: noop}"
    result = await process(pipeline_file(tmp_path, chaos, check))
    assert (result.rung, result.output, result.review) == ("model:m", {"category": "billing"}, False)
    assert [(c, a) for c, a, _, _ in failed_checks(result)] == [("confidence", "noop")]
    assert result.records[0].confidence == {"category": pytest.approx(math.exp(-2.0), abs=1e-6)}


async def test_tools_mode_gives_no_confidence_so_the_check_fails_and_escalates(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    script(chaos, {"content": {"category": "billing"}, "logprob": -0.01})  # sure, but a tool call carries none
    result = await process(pipeline_file(tmp_path, chaos, model="mode: tools"))
    assert (result.rung, result.output) == ("default", {"category": "technical"})
    ((check, action, rung, message),) = failed_checks(result)
    assert (check, action, rung) == ("confidence", "escalate", 0)
    assert "no confidence" in message
    (request,) = sent(chaos)
    assert request["logprobs"] is True and request["tools"]


async def test_rules_and_default_outputs_are_not_judged(chaos: ChaosServer, tmp_path: Path) -> None:
    check = "{layer: semantic, check: confidence, field: category, min: 0.99, on_fail: review}"
    rules = "{rules: {fields: {category: {keywords: {billing: [invoice]}}}}}"
    ladder = f"[{{model: m, reasks: 0, retries: 0}}, {rules}, {{default: {{category: technical}}, review: false}}]"
    path = pipeline_file(tmp_path, chaos, check, ladder)
    script(chaos, {"raw": "no JSON here"}, {"raw": "no JSON either"})
    by_rules = await process(path, "Please resend the invoice")
    assert (by_rules.rung, by_rules.output, by_rules.review) == ("rules", {"category": "billing"}, False)
    by_default = await process(path, "something else entirely")
    assert (by_default.rung, by_default.output, by_default.review) == ("default", {"category": "technical"}, False)
    for result in (by_rules, by_default):
        (record,) = result.records
        assert not [v for v in record.verdicts if v.check == "confidence" and not v.passed]
        assert record.confidence is None


async def test_logprobs_on_the_model_records_confidence_and_changes_nothing_else(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    plan = {"content": {"category": "billing"}, "logprob": -0.3}
    script(chaos, plan, plan)
    plain = await process(pipeline_file(tmp_path, chaos, None, "[{model: m}]"))
    (tmp_path / "with").mkdir()
    asked = await process(
        pipeline_file(tmp_path / "with", chaos, None, "[{model: m}]", "mode: json_schema, logprobs: true")
    )
    for result in (plain, asked):
        assert (result.rung, result.status, result.output, result.review) == (
            "model:m",
            "validated",
            {"category": "billing"},
            False,
        )
        assert failed_checks(result) == []
    assert plain.records[0].confidence is None
    assert asked.records[0].confidence == {"category": pytest.approx(math.exp(-0.3), abs=1e-6)}
    first, second = sent(chaos)
    assert "logprobs" not in first and second["logprobs"] is True
    assert first["messages"] == second["messages"]


def test_a_runs_decision_store_keeps_confidence(chaos: ChaosServer, tmp_path: Path) -> None:
    check = "{layer: semantic, check: confidence, field: category, min: 0.9, on_fail: review}"
    path = pipeline_file(tmp_path, chaos, check)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("charged twice")
    (docs / "b.txt").write_text("the app crashes")
    chaos.script.extend(
        [
            {"content": {"category": "billing"}, "logprob": -0.02},
            {"content": {"category": "technical"}, "logprob": -0.5},
        ]
    )
    out = tmp_path / "out"
    options = RunOptions(input=str(docs), output=str(out), concurrency=1)
    batch_without_prefect(load_pipeline(path), options, concurrency=1)
    log = DecisionLog(out / "decisions.sqlite", readonly=True)
    try:
        rows = sorted(log.records(options.run_id), key=lambda row: row["confidence"]["category"])
    finally:
        log.close()
    assert [(row["review"], row["rung_label"]) for row in rows] == [(1, "model:m"), (0, "model:m")]
    assert [row["confidence"]["category"] for row in rows] == [
        pytest.approx(math.exp(-0.5), abs=1e-6),
        pytest.approx(math.exp(-0.02), abs=1e-6),
    ]
