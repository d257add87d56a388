"""The sandwich over real HTTP: input checks, ladder rungs, records."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from steadyflow.stages.rules import RulesFailed, extract
from tests.conftest import run_stage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs/support_triage.yaml"


def _run(chaos: ChaosServer, docs: list[Document], *overrides: str) -> list:
    on_chaos = [
        "models.small.provider=openai",
        f"models.small.base_url={chaos.base_url}",
        "models.small.timeout_s=1",
        "models.small.price.input_per_mtok=0.15",
        "models.small.price.output_per_mtok=0.6",
    ]
    return run_stage(load_pipeline(EXAMPLE, [*on_chaos, *overrides]), "triage", docs)


def test_validated_output_and_its_record(chaos: ChaosServer) -> None:
    # scripted: the endpoint's random answer depends on the prompt's text, and the prompt file is example content
    chaos.script.append({"content": {"category": "billing", "priority": "medium", "summary": "Refund of an invoice"}})
    doc = Document("d1", "Subject: refund\n\nPlease refund my invoice, jane@example.com", "mem")
    [record] = _run(chaos, [doc])
    assert record.status == "validated" and record.rung_label == "model:small"
    assert set(doc.outputs["triage"]) == {"category", "priority", "summary"}
    assert record.prompt_version and record.input_hash and record.cost_usd > 0
    assert "jane@example.com" not in repr(record)  # records keep hashes, not text


def test_failed_model_falls_to_rules_and_counts_failed_cost(chaos: ChaosServer) -> None:
    chaos.script.extend([{"fault": "http_503"}] + [{"fault": "wrong_type"}] * 3)
    doc = Document("d1", "Subject: Charged twice\n\nmy invoice shows a double charge, refund please", "mem")
    [record] = _run(chaos, [doc])
    assert record.status == "rules" and doc.outputs["triage"]["category"] == "billing"
    kinds = [a.error_kind for a in record.attempts]
    # a transient 503 is retried once by the ladder; invalid output is re-asked twice by instructor
    assert kinds == ["server_error", "invalid_output", "invalid_output", "invalid_output", None]
    assert record.tokens_in > 0 and record.cost_usd > 0  # failed attempts are paid for


def test_rules_that_cannot_fill_the_schema_fall_to_default(chaos: ChaosServer) -> None:
    chaos.script.extend([{"fault": "http_500"}] * 2)
    doc = Document("d1", "x" * 3, "mem")
    [record] = _run(chaos, [doc], "stages.triage.ladder.1.rules={fields: {category: {keywords: {billing: [invoice]}}}}")
    assert record.status == "default" and record.review and doc.review
    assert doc.outputs["triage"]["summary"] == "needs human triage"


@pytest.mark.parametrize(
    ("text", "reason"), [("   ", "empty document"), ("a\x00b", "binary content (NUL bytes)"), ("y" * 9000, "too large")]
)
def test_bad_input_is_quarantined_before_any_call(chaos: ChaosServer, text: str, reason: str) -> None:
    doc = Document("d1", text, "mem")
    [record] = _run(chaos, [doc])
    assert record.status == "quarantined" and record.reason and record.reason.startswith(reason)
    assert doc.quarantined == ("triage", record.reason)
    assert len(chaos.requests) == 0


def test_load_errors_are_quarantined_with_their_reason(chaos: ChaosServer) -> None:
    doc = Document("d1", "", "mem", load_error="undecodable: not valid UTF-8 (byte 3)")
    [record] = _run(chaos, [doc])
    assert record.reason == "undecodable: not valid UTF-8 (byte 3)"


def test_rules_extractor_keywords_regex_and_failure() -> None:
    pipeline = load_pipeline(EXAMPLE)
    stage = pipeline.stages[0]
    out = extract(stage.rules[1], stage.output_model, "Subject: Outage!\n\nThe API is down, urgent")
    assert out.model_dump() == {"category": "technical", "priority": "high", "summary": "Outage!"}
    from steadyflow.spec.models import FieldRule, RulesSpec

    with pytest.raises(RulesFailed, match="category"):
        extract(
            RulesSpec(fields={"category": FieldRule(keywords={"billing": ["invoice"]})}), stage.output_model, "hello"
        )
