"""Redaction covers everything a prompt renders (text, id, fields, earlier outputs), and the rules rung.

Real HTTP to the chaos endpoint on loopback and real presidio; the endpoint's request log is
what a provider would have received.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steadyflow.audit.records import DecisionRecord
from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from tests.conftest import run_stage

PIPELINE = """
pipeline: scope
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 2}}
stages:
  - id: first
    kind: rules
    rules:
      fields:
        contact: {{regex: '([\\w.]+@[\\w.]+\\.com)', default: none}}
    output: {{contact: {{type: string}}}}
  - id: s
    kind: ai
    input: {input}
    prompt:
      template: |
        Ticket {{{{ id }}}} from {{{{ doc.from }}}} (phone {{{{ doc.meta.phone }}}}).
        Earlier: {{{{ outputs }}}}
        {{{{ text }}}}
    output:
      category: {{enum: [billing, technical]}}
      summary: {{type: string, max_length: 120}}
    ladder:
      - {{model: m, reasks: 0, retries: 0}}
      - rules:
          fields:
            category: {{keywords: {{billing: [refund]}}, default: technical}}
            summary: {{regex: 'Contact: ([^\\n]+)', default: "see ticket"}}
"""

# every value a provider must never see, with where it lives
IN_ID = "jane.doe@example.com"
IN_FIELD = ["Jane Doe", "+1 212-555-0142"]
IN_TEXT = ["Robert Miller", "robert.miller@example.org", "(415) 555-0199"]
IN_OUTPUT = "peter.parker@example.com"  # found by the rules stage, rendered through {{ outputs }}
TEXT = (
    "I want a refund, my card was charged twice.\n"
    f"Contact: {IN_TEXT[0]}, {IN_TEXT[1]}, phone {IN_TEXT[2]}\nCC {IN_OUTPUT}\n"
)
REDACT = ["EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"]


def _docs() -> list[Document]:
    fields = {"from": f"{IN_FIELD[0]} <{IN_ID}>", "meta": {"phone": IN_FIELD[1]}}
    return [Document(f"{IN_ID}.txt", TEXT, "mem", fields=fields)]


def _run(tmp_path: Path, chaos: ChaosServer, input_spec: dict[str, Any]) -> tuple[list[DecisionRecord], Document]:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=chaos.base_url, input=json.dumps(input_spec)))
    pipeline = load_pipeline(file)
    docs = _docs()
    run_stage(pipeline, "first", docs)
    assert docs[0].outputs["first"] == {"contact": IN_OUTPUT}
    return run_stage(pipeline, "s", docs), docs[0]


def test_no_pii_from_id_fields_text_or_earlier_outputs_reaches_the_endpoint(tmp_path: Path, chaos: ChaosServer) -> None:
    [record], _ = _run(tmp_path, chaos, {"redact_pii": REDACT})
    assert record.status == "validated"
    sent = json.dumps(list(chaos.requests))
    leaked = [v for v in [IN_ID, *IN_FIELD, *IN_TEXT, IN_OUTPUT] if v in sent]
    assert leaked == [], f"reached the endpoint: {leaked}"
    user = chaos.requests[0]["messages"][-1]["content"]
    # one map per document, the text numbered first: the address in the id and in the From header is one placeholder
    assert user.startswith("Ticket <EMAIL_ADDRESS_3>.txt from <PERSON_2> <<EMAIL_ADDRESS_3>> (phone <PHONE_NUMBER_2>)")
    assert "Earlier: {'first': {'contact': '<EMAIL_ADDRESS_" in user
    assert [v.message for v in record.verdicts if v.check == "redact_pii"] != [""]


def test_a_placeholder_from_a_field_is_restored_where_allowed(tmp_path: Path, chaos: ChaosServer) -> None:
    # the text's two addresses are numbered first; the id's is the third
    chaos.script.append({"content": {"category": "billing", "summary": "reply to <EMAIL_ADDRESS_3>"}})
    [record], doc = _run(tmp_path, chaos, {"redact_pii": REDACT, "restore_pii": ["summary"]})
    assert record.status == "validated"
    assert (
        doc.outputs["s"]["summary"] == f"reply to {IN_ID}"
    )  # the placeholder the model saw only in the id and a field
    assert IN_ID not in json.dumps(list(chaos.requests))


def test_the_rules_rung_reads_the_redacted_text(tmp_path: Path, chaos: ChaosServer) -> None:
    chaos.script.append({"fault": "http_500"})
    [record], doc = _run(tmp_path, chaos, {"redact_pii": REDACT})
    assert record.status == "rules"
    summary = doc.outputs["s"]["summary"]
    assert not [v for v in IN_TEXT if v in summary], (
        summary
    )  # the rules copied the line the model saw, placeholders and all
    assert "<PERSON_" in summary and "<EMAIL_ADDRESS_" in summary


def test_the_rules_rung_output_is_restored_only_for_restore_pii_fields(tmp_path: Path, chaos: ChaosServer) -> None:
    chaos.script.append({"fault": "http_500"})
    [record], doc = _run(tmp_path, chaos, {"redact_pii": REDACT, "restore_pii": ["summary"]})
    assert record.status == "rules"
    assert doc.outputs["s"]["summary"].startswith(f"{IN_TEXT[0]}, {IN_TEXT[1]}")
    assert [v.check for v in record.verdicts][-1] == "restore_pii"


GROUNDED = """
pipeline: grounded
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 2}}
stages:
  - id: s
    kind: ai
    input: {{redact_pii: [PERSON], restore_pii: [buyer]}}
    prompt: {{template: "Who buys? {{{{ text }}}}"}}
    output:
      buyer: {{type: string, optional: true}}
    validate:
      - {{layer: semantic, check: grounded, fields: [buyer], on_fail: filter}}
    ladder:
      - {{model: m, reasks: 0, retries: 0}}
      - rules:
          fields:
            buyer: {{regex: 'acquired by ([^,.]+)'}}
"""


def test_a_name_the_rules_find_is_grounded_in_the_same_text_and_restored(tmp_path: Path, chaos: ChaosServer) -> None:
    # issue 12: the rules read the raw text and the grounding check the redacted one, so it nulled every name they found
    chaos.script.append({"fault": "http_500"})
    file = tmp_path / "p.yaml"
    file.write_text(GROUNDED.format(url=chaos.base_url))
    doc = Document("d1", "The shop was acquired by Robert Miller, the report says.", "mem")
    [record] = run_stage(load_pipeline(file), "s", [doc])
    assert record.status == "rules"
    assert [v.passed for v in record.verdicts if v.check == "grounded"] == [True]
    assert doc.outputs["s"]["buyer"] == "Robert Miller"
