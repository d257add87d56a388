"""Why documents fell down the ladder: the same reasons, with counts, in the run summary, the report and the artifact.

A real stage over real HTTP: the chaos endpoint answers 4 requests with an invalid category and 2 with
HTTP 500; the rules cannot fill the list field ``companies``; the default takes all six. One empty
document is quarantined by the input check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.audit.reasons import normalise
from steadyflow.audit.report import run_cost, run_overview
from steadyflow.chaos.server import ChaosServer
from steadyflow.cli import _print_summary, app
from steadyflow.core.document import Document
from steadyflow.flows.artifact import render_summary
from steadyflow.runner.run import RunOptions
from steadyflow.runner.summary import RunSummary
from steadyflow.spec.loader import load_pipeline
from tests.conftest import batch_without_prefect

PIPELINE = """
pipeline: reasons
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 5}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Companies in: {{{{ text }}}}"}}
    output:
      category: {{enum: [deal, other]}}
      companies: {{type: list, items: {{type: string}}, min_items: 1}}
    ladder:
      - {{model: m, reasks: 0, retries: 0}}
      - rules:
          fields:
            category: {{keywords: {{deal: [acquired]}}, default: other}}
            companies: {{regex: "Acquirer: (\\\\w+)"}}  # never in these documents
      - {{default: {{category: other, companies: [unknown]}}, review: true}}
sink: {{kind: jsonl, path: out.jsonl}}
run: {{concurrency: 2, chunk_size: 50}}
"""

SECRET = "Zyxwvutsrq"  # in every document: it must appear in no reason
INVALID = "invalid_output (invalid after N attempts: category: literal_error)"
RULES = "rules_failed (rules gave no valid value for: companies)"
EXPECTED = {"default": {"model:m": {INVALID: 4, "server_error (HTTP 500)": 2}, "rules": {RULES: 6}}}


def _run(tmp_path: Path, chaos: ChaosServer) -> tuple[RunSummary, Path, str]:
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=chaos.base_url))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.txt").write_text(f"Company: {SECRET}{i} acquired by {SECRET} Holdings for {i * 17} million")
    (docs / "empty.txt").write_text("")
    chaos.script.extend(
        [{"content": {"category": "nonsense", "companies": [SECRET]}}] * 4 + [{"fault": "http_500"}] * 2
    )
    pipeline = load_pipeline(tmp_path / "p.yaml")
    out = tmp_path / "out"
    options = RunOptions(input=str(docs), output=str(out))

    return batch_without_prefect(pipeline, options, concurrency=2), out / "decisions.sqlite", options.run_id


def test_reasons_with_counts_in_summary_report_and_artifact(tmp_path: Path, chaos: ChaosServer, capsys: Any) -> None:
    summary, db, run_id = _run(tmp_path, chaos)
    data = summary.as_json()
    assert data["by_rung"] == {"s": {"default": 6, "quarantined": 1}}
    reasons = dict(data["fallback_reasons"]["s"])
    quarantine = reasons.pop("quarantined")
    assert reasons == EXPECTED
    assert quarantine == {"quarantine": {"empty document": 1}}

    store, ledger = DecisionLog(db, readonly=True), RunLedger(db.parent / "runs.sqlite", readonly=True)
    assert run_cost(store, ledger, run_id)["fallback_reasons"] == data["fallback_reasons"]
    overview = run_overview(store, ledger, run_id)
    store.close()
    ledger.close()
    assert overview["fallback_reasons"] == data["fallback_reasons"]
    markdown = render_summary(summary, overview)
    assert "## Why documents fell down the ladder" in markdown
    assert f"| s | default | model:m | {INVALID} | 4 |" in markdown
    assert "| s | default | model:m | server_error (HTTP 500) | 2 |" in markdown
    assert f"| s | default | rules | {RULES} | 6 |" in markdown

    _print_summary(data, as_json=False)
    printed = capsys.readouterr().out
    assert f"default <- model:m: {INVALID} x4, server_error (HTTP 500) x2; rules: {RULES} x6" in printed
    report = CliRunner().invoke(app, ["report", run_id, "--db", str(db)])
    assert report.exit_code == 0 and f"default <- model:m: {INVALID} x4" in report.output
    as_json = CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--json"])
    assert json.loads(as_json.output)["fallback_reasons"] == data["fallback_reasons"]
    for shown in (json.dumps(data), markdown, printed, report.output):
        assert SECRET not in shown


def test_documents_that_did_not_fall_have_no_reasons(tmp_path: Path, chaos: ChaosServer) -> None:
    chaos.script.extend([{"fault": "http_500"}])  # one retry on the first rung is no fall
    (tmp_path / "p.yaml").write_text(PIPELINE.format(url=chaos.base_url).replace("retries: 0", "retries: 1"))
    docs = [Document("d0", "Company: Acme acquired", "mem")]
    from tests.conftest import run_stage

    [record] = run_stage(load_pipeline(tmp_path / "p.yaml"), "s", docs, concurrency=2)
    assert record.rung == 0 and [a.error_kind for a in record.attempts] == ["server_error", None]
    summary = RunSummary(run_id="r", pipeline="reasons")
    summary.add_records([record])
    assert summary.as_json()["fallback_reasons"] == {}


def test_messages_group_without_ids_or_per_document_numbers() -> None:
    assert normalise("companies.3: string_type; and 2 more") == "companies.N: string_type; and N more"
    assert normalise("HTTP 500") == "HTTP 500"  # a status code is the reason itself
    assert normalise("prompt exceeds context (5123 > 4096)") == "prompt exceeds context (N > N)"
    assert normalise("stage 's' failed for 3f2a9c1b7d4e5f60") == "stage 's' failed for <id>"
    assert normalise("timed out after 2.5 s") == "timed out after N s"
    assert normalise("x" * 500).endswith("…") and len(normalise("x" * 500)) == 160
