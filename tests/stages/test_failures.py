"""One document's failure never stops the batch: checks that raise, rules that trip, inputs that break a library.

Real plugin checks registered with ``@validator``, real HTTP to the chaos endpoint, real presidio.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steadyflow.audit.records import DecisionRecord
from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from steadyflow.spec.models import FieldRule, RulesSpec
from steadyflow.stages.rules import extract
from tests.conftest import run_stage

PIPELINE = """
pipeline: failures
plugins: [failing_checks]
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 2}}
stages:
  - id: s
    kind: ai
    input: {input}
    prompt: {{template: "Classify: {{{{ text }}}}"}}
    output:
      category: {{enum: [billing, technical]}}
      buyer: {{type: string, optional: true}}
    validate: {checks}
    ladder:
      - {{model: m, reasks: 1, retries: 0}}
      - rules:
          fields:
            category: {{keywords: {{billing: [refund]}}, default: technical}}
            buyer: {{regex: '(?:by (\\w+)|acquired)'}}
      - {{default: {{category: technical}}, review: true}}
"""

PLUGINS = """
import json

from steadyflow.validators.base import Finding, validator


@validator("parse_json")
def parse_json(params, output, context):
    json.loads(context.text)  # a document nested thousands deep: RecursionError
    return Finding(True)


@validator("divide")
def divide(params, output, context):
    return Finding(1 / 0 > 0, "never")
"""
DEEP = "[" * 20_000 + "]" * 20_000
MARKER = "QQMARKER-document-text"


def _run(
    tmp_path: Path,
    chaos: ChaosServer,
    texts: list[str],
    checks: list[dict[str, Any]] | None = None,
    input_spec: dict[str, Any] | None = None,
) -> list[DecisionRecord]:
    (tmp_path / "failing_checks.py").write_text(PLUGINS)
    file = tmp_path / "p.yaml"
    file.write_text(
        PIPELINE.format(
            url=chaos.base_url, checks=json.dumps(checks or []), input=json.dumps(input_spec or {"max_chars": 100_000})
        )
    )
    docs = [Document(f"d{i}", text, "mem") for i, text in enumerate(texts)]
    return run_stage(load_pipeline(file), "s", docs, concurrency=2)


@pytest.mark.parametrize("on_fail", ["noop", "escalate", "reask"])
def test_a_document_that_makes_a_check_raise_is_quarantined_and_the_batch_goes_on(
    tmp_path: Path, chaos: ChaosServer, on_fail: str
) -> None:
    check = {"layer": "business", "check": "parse_json", "on_fail": on_fail}
    records = _run(tmp_path, chaos, ['{"refund": 1}', DEEP, "[1, 2]"], [check])
    assert [r.status for r in records] == ["validated", "quarantined", "validated"]
    deep = records[1]
    # a check that cannot run is no verdict: with noop it used to let the output through unchecked
    assert deep.reason == "internal error in check 'parse_json': RecursionError"
    assert deep.attempts and deep.attempts[0].kind == "model" and deep.cost_usd >= 0  # the paid call stays on record
    assert ("parse_json", "quarantine", "check raised RecursionError") in [
        (v.check, v.action, v.message) for v in deep.verdicts
    ]


def test_a_plugin_check_that_always_raises_quarantines_every_document_with_its_type(
    tmp_path: Path, chaos: ChaosServer
) -> None:
    records = _run(
        tmp_path, chaos, [f"refund {MARKER}", "crash"], [{"layer": "business", "check": "divide", "on_fail": "noop"}]
    )
    assert [(r.status, r.reason) for r in records] == [
        ("quarantined", "internal error in check 'divide': ZeroDivisionError")
    ] * 2
    assert MARKER not in repr(records)


def test_a_regex_group_that_did_not_take_part_falls_back_instead_of_raising() -> None:
    rules = RulesSpec(
        fields={
            "category": FieldRule(default="billing"),
            "buyer": FieldRule(regex=r"(?:by (\w+)|acquired)", default="unknown"),
        }
    )
    from pydantic import create_model

    model = create_model("Out", category=(str, ...), buyer=(str, ...))
    assert extract(rules, model, "the firm was acquired last year").model_dump() == {
        "category": "billing",
        "buyer": "unknown",
    }
    assert extract(rules, model, "bought by Acme").model_dump()["buyer"] == "Acme"


def test_the_rules_rung_with_such_a_group_gives_an_output(tmp_path: Path, chaos: ChaosServer) -> None:
    chaos.script.extend([{"fault": "http_500"}] * 2)
    records = _run(tmp_path, chaos, ["refund: the shop was acquired", "refund: bought by Acme"])
    assert [r.status for r in records] == ["rules", "rules"]
    assert all(a.error_kind in ("server_error", None) for r in records for a in r.attempts)


def test_a_document_that_breaks_a_library_during_input_preparation_is_quarantined(
    tmp_path: Path, chaos: ChaosServer
) -> None:
    # spaCy refuses texts over 1,000,000 characters with a ValueError: one such document, one ordinary one
    huge = f"{MARKER} " + "word " * 220_000
    spec = {"max_chars": 2_000_000, "redact_pii": ["EMAIL_ADDRESS"], "injection": "off"}
    records = _run(tmp_path, chaos, [huge, "refund please"], input_spec=spec)
    assert records[1].status == "validated"
    assert records[0].status == "quarantined" and records[0].reason is not None
    assert records[0].reason.startswith("internal error in stage 's' at steadyflow.") and records[0].reason.endswith(
        ": ValueError"
    )
    assert MARKER not in repr(records) and "E088" not in repr(records)
