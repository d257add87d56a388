"""Nothing of a document or of a model's output reaches a decision record or its store, whatever fails.

Documents carry unique markers and PII; the chaos endpoint answers with faults and with replies
that quote them (schema violations, unknown keys, broken JSON); checks re-ask, fix, and raise.
Then the records and the whole SQLite store are searched for every marker.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from tests.conftest import run_stage

PIPELINE = """
pipeline: leaks
plugins: [leaky_checks]
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 2}}
stages:
  - id: s
    kind: ai
    input: {{redact_pii: [EMAIL_ADDRESS, PHONE_NUMBER, PERSON]}}
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output:
      category: {{enum: [billing, technical]}}
      summary: {{type: string, max_length: 200}}
    validate:
      - {{layer: business, check: quoting, on_fail: reask}}
      - {{layer: semantic, check: grounded, fields: [summary], match: exact, on_fail: reask}}
      - {{layer: safety, check: pii, fields: [summary], on_fail: fix}}
    ladder:
      - {{model: m, reasks: 1, retries: 0}}
      - rules:
          fields:
            category: {{keywords: {{billing: [refund]}}, default: technical}}
            summary: {{regex: 'Note: ([^\\n]+)'}}
      - {{default: {{category: technical, summary: ""}}, review: true}}
"""

# a plugin whose exceptions quote the output and the document, as careless code does
PLUGINS = """
from steadyflow.validators.base import Finding, validator


@validator("quoting")
def quoting(params, output, context):
    if "OUTMARK" in output.get("summary", ""):
        raise ValueError(f"cannot judge {output['summary']!r} for {context.text!r}")
    return Finding(True)
"""
DOC_MARKS = [f"DOCMARK{i}x" for i in range(8)]
OUT_MARKS = ["OUTMARK1y", "OUTMARK2y", "OUTMARK3y", "OUTMARK4y", "OUTMARK5y"]
PII = ["Margaret Hamilton", "margaret.hamilton@example.com", "+1 415-555-0123"]
REPLIES = [
    {
        "content": {"category": f"{OUT_MARKS[0]} {PII[1]}", "summary": "x"}
    },  # not in the enum: literal_error echoes input_value
    {
        "content": {"category": "billing", "summary": "ok", OUT_MARKS[1]: f"{PII[0]}"}
    },  # an unknown key named by the model
    {"raw": f"{OUT_MARKS[2]} not json {{"},
    {"fault": "malformed"},
    {"fault": "wrong_type"},
    {"fault": "truncated"},
    {"fault": "empty"},
    {"content": {"category": "billing", "summary": f"{OUT_MARKS[3]} invented"}},  # not grounded: re-asked
    {"content": {"category": "billing", "summary": f"{OUT_MARKS[4]}"}},  # the plugin raises quoting it
]


def test_no_marker_or_pii_of_documents_or_outputs_reaches_records_or_the_store(
    tmp_path: Path, chaos: ChaosServer
) -> None:
    (tmp_path / "leaky_checks.py").write_text(PLUGINS)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=chaos.base_url))
    chaos.script.extend(REPLIES * 2)
    texts = [f"Refund please {mark}. Note: {PII[0]} at {PII[1]}, call {PII[2]} about {mark}\n" for mark in DOC_MARKS]
    docs = [Document(f"d{i}", text, "mem") for i, text in enumerate(texts)]
    records = run_stage(load_pipeline(tmp_path / "p.yaml"), "s", docs, concurrency=2)
    store, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("run", "leaks", "1", None)
    store.add(records)
    ledger.complete("run", [(store.key(r.doc_id), False) for r in records], {})
    rows = store.records("run")
    store.close()
    ledger.close()

    stored = b"".join(p.read_bytes() for p in tmp_path.glob("*.sqlite*"))
    dumped = json.dumps([asdict(r) for r in records]) + json.dumps(rows, default=str)
    found = [m for m in [*DOC_MARKS, *OUT_MARKS, *PII] if m in dumped or m.encode() in stored]
    assert found == [], f"in records or the store: {found}"
    # the faults did happen, and the records say what went wrong in safe words
    errors = " ".join(a.error or "" for r in records for a in r.attempts) + " ".join(r.reason or "" for r in records)
    for expected in [
        "literal_error",
        "(extra key): extra_forbidden",
        "json_invalid",
        "internal error in check 'quoting': ValueError",
    ]:
        assert expected in errors, expected
    assert len(records) == len(docs) and {r.status for r in records} <= {"validated", "rules", "default", "quarantined"}
