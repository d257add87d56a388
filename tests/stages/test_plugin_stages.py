"""Rules and ``@stage`` plugin stages: ladders of [rules | plugin, default] that run the stage's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steadyflow.core.document import Document
from steadyflow.spec import SpecError, load_pipeline
from steadyflow.stages.checks import check_pipeline
from steadyflow.stages.kinds import STAGE_KINDS, stage
from tests.conftest import run_stage

RULES = """
pipeline: rules-only
stages:
  - id: tag
    kind: rules
    rules:
      fields:
        category: {{keywords: {{billing: [invoice, refund], technical: [crash]}}}}
    output:
      category: {{enum: [billing, technical, account]}}
    validate: {checks}
    {default}
"""
NOT_TECHNICAL = {"layer": "business", "check": "rule", "rule": "output.category != 'technical'", "on_fail": "escalate"}


def _rules_run(tmp_path: Path, checks: list[dict[str, Any]], default: str, texts: list[str]) -> list[Any]:
    file = tmp_path / "rules.yaml"
    file.write_text(RULES.format(checks=json.dumps(checks), default=default))
    docs = [Document(f"d{i}", text, "mem") for i, text in enumerate(texts)]
    return run_stage(load_pipeline(file), "tag", docs)


def test_a_rules_stage_without_checks_keeps_its_records(tmp_path: Path) -> None:
    ok, fell, lost = _rules_run(tmp_path, [], "default: {category: account}", ["refund please", "hello", "crash"])
    assert (ok.status, ok.rung, ok.rung_label, ok.review) == ("rules", 0, "rules", False)
    assert [a.kind for a in ok.attempts] == ["rules"] and ok.attempts[0].error_kind is None
    assert (fell.status, fell.rung, fell.rung_label, fell.review) == ("default", 1, "default", True)
    assert [(a.kind, a.error_kind) for a in fell.attempts] == [("rules", "rules_failed"), ("default", None)]
    assert lost.status == "rules"  # 'crash' is technical: nothing checks it here
    [alone] = _rules_run(tmp_path, [], "", ["hello"])
    assert (alone.status, alone.reason) == ("quarantined", "rules gave no valid output and there is no default")


def test_a_rules_output_that_fails_a_check_escalates_to_the_default(tmp_path: Path) -> None:
    billing, technical = _rules_run(tmp_path, [NOT_TECHNICAL], "default: {category: account}", ["refund", "crash"])
    assert (billing.status, billing.rung_label) == ("rules", "rules")
    assert [(v.check, v.passed, v.action) for v in billing.verdicts] == [
        ("schema", True, "pass"),
        ("rule", True, "pass"),
    ]
    assert (technical.status, technical.rung, technical.review) == ("default", 1, True)
    assert [(v.check, v.passed, v.action, v.rung) for v in technical.verdicts] == [
        ("rule", False, "escalate", 0),
        ("schema", True, "pass", 1),
        ("rule", True, "pass", 1),
    ]


def test_a_default_that_fails_a_check_quarantines_and_quarantine_stops_at_once(tmp_path: Path) -> None:
    [bad_default] = _rules_run(tmp_path, [NOT_TECHNICAL], "default: {category: technical}", ["crash"])
    assert (bad_default.status, bad_default.rung, bad_default.rung_label) == ("quarantined", 1, "default")
    assert bad_default.reason is not None and bad_default.reason.startswith("rule: ")
    strict = {**NOT_TECHNICAL, "on_fail": "quarantine"}
    [stopped] = _rules_run(tmp_path, [strict], "default: {category: account}", ["crash"])
    assert (stopped.status, stopped.rung) == ("quarantined", 0)
    assert [a.kind for a in stopped.attempts] == ["rules"]  # the default was never tried


PLUGIN = """
pipeline: plugin-kind
stages:
  - id: country
    kind: {kind}
    with: {{table: {{FR: France, DE: Germany}}}}
    output:
      country: {{type: string}}
    validate:
      - {{layer: business, check: rule, rule: "output.country != 'unknown'", on_fail: escalate}}
    default: {{country: elsewhere}}
    review: false
"""


def _plugin_pipeline(tmp_path: Path, kind: str) -> Any:
    file = tmp_path / "plugin.yaml"
    file.write_text(PLUGIN.format(kind=kind))
    return load_pipeline(file)


def test_a_plugin_stage_kind_runs_through_the_engine_with_its_checks_and_default(tmp_path: Path) -> None:
    seen: list[tuple[dict[str, Any], str, str]] = []
    with STAGE_KINDS.scoped():

        @stage("lookup")
        async def lookup(params: dict[str, Any], text: str, context: Any) -> dict[str, Any]:
            seen.append((params, text, context.doc_id))
            if text == "boom":
                raise KeyError(text)
            return {"country": params["table"].get(text.strip(), "unknown")}

        pipeline = _plugin_pipeline(tmp_path, "lookup")
        assert check_pipeline(pipeline) == []
        docs = [Document("a", "FR", "mem"), Document("b", "XX", "mem"), Document("c", "boom", "mem")]
        found, unknown, broken = run_stage(pipeline, "country", docs)
    assert "lookup" not in STAGE_KINDS  # scoped: gone after the block
    assert (found.status, found.rung, found.rung_label, found.review) == ("validated", 0, "lookup", False)
    assert docs[0].outputs["country"] == {"country": "France"} and docs[0].rungs["country"] == "lookup"
    assert (unknown.status, unknown.rung, unknown.rung_label) == ("default", 1, "default")
    assert [(v.check, v.action, v.rung) for v in unknown.verdicts if not v.passed] == [("rule", "escalate", 0)]
    assert docs[1].outputs["country"] == {"country": "elsewhere"}
    assert broken.status == "default"
    assert (broken.attempts[0].kind, broken.attempts[0].error_kind) == ("lookup", "unknown")
    assert broken.attempts[0].error == "internal error in stage kind 'lookup': KeyError"  # the type, never the text
    assert sorted((text, doc) for _, text, doc in seen) == [("FR", "a"), ("XX", "b"), ("boom", "c")]
    assert all(params == {"table": {"FR": "France", "DE": "Germany"}} for params, _, _ in seen)


def test_a_plugin_output_that_does_not_fit_is_a_recorded_attempt(tmp_path: Path) -> None:
    with STAGE_KINDS.scoped():

        @stage("lookup")
        def lookup(params: dict[str, Any], text: str, context: Any) -> dict[str, Any]:
            return {"country": 42, "extra": "quoted document text"}

        [record] = run_stage(_plugin_pipeline(tmp_path, "lookup"), "country", [Document("a", "FR", "mem")])
    assert record.status == "default"
    assert record.attempts[0].error_kind == "invalid_output"
    assert "quoted document text" not in json.dumps(record.attempts[0].error)


def test_an_unknown_stage_kind_is_reported_with_a_suggestion_and_stops_the_engine(tmp_path: Path) -> None:
    with STAGE_KINDS.scoped():
        stage("lookup")(lambda params, text, context: {"country": text})
        pipeline = _plugin_pipeline(tmp_path, "lokup")
        [problem] = check_pipeline(pipeline)
        assert str(problem).endswith("stages[0].kind: unknown stage kind 'lokup' (did you mean 'lookup'?)")
        assert problem.line == 5
        assert check_pipeline(pipeline, import_code=False) == []  # validate --no-plugins: nothing imported, no claim
        with pytest.raises(SpecError, match="did you mean 'lookup'"):
            run_stage(pipeline, "country", [Document("a", "FR", "mem")])


def test_a_plugin_kind_cannot_take_a_built_in_name() -> None:
    for name in ("ai", "rules", "model", "default"):
        with pytest.raises(ValueError, match="built-in"):
            stage(name)


def test_rungs_are_built_once_per_stage_with_their_labels_and_statuses() -> None:
    from steadyflow.stages.ladder import build_ladder
    from tests.conftest import ROOT

    [triage] = load_pipeline(ROOT / "configs/support_triage.yaml").stages
    rungs = build_ladder(triage).rungs
    assert [(r.index, r.label, r.status.value, r.routable, r.final) for r in rungs] == [
        (0, "model:small", "validated", True, False),
        (1, "rules", "rules", False, False),
        (2, "default", "default", False, True),
    ]
    assert [r.where for r in rungs] == [
        "ladder rung 0 (model small)",
        "ladder rung 1 (rules)",
        "ladder rung 2 (default)",
    ]
    assert rungs[2].review is True and rungs[0].model == "small"
