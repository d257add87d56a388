"""Scoring outcomes against labels: accuracy, coverage, confusion, breakdowns, the confidence curve, reports."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyflow.evals.dataset import Dataset, Example
from steadyflow.evals.report import as_html, markdown, text
from steadyflow.evals.scorers import ScorerError
from steadyflow.evals.scoring import NONE, THRESHOLDS, Evaluation, Outcome, evaluate, scorers_for

SCHEMAS: dict[str, dict[str, Any]] = {
    "triage": {
        "properties": {
            "category": {"enum": ["billing", "technical", "account"], "type": "string"},
            "urgent": {"type": "boolean"},
            "maybe": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
            "amount": {"type": "number"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"},
            "address": {"$ref": "#/$defs/Address"},
        },
        "$defs": {"Address": {"properties": {"city": {"type": "string"}, "zone": {"enum": ["eu", "us"]}}}},
    }
}


def example(ident: str, tags: tuple[str, ...] = (), **expected: Any) -> Example:
    return Example(ident, {"id": ident, "text": f"document {ident}"}, {"triage": dict(expected)}, tags)


def outcome(
    ident: str,
    output: dict[str, Any] | None,
    rung: str = "model:small",
    model: str | None = "small",
    confidence: dict[str, float] | None = None,
    review: bool = False,
    cost: float = 0.0,
    latency: float = 0.0,
) -> Outcome:
    quarantined = output is None
    return Outcome(
        id=ident,
        outputs={} if output is None else {"triage": output},
        ended_by={"triage": "quarantined" if quarantined else rung},
        models={"triage": None if quarantined or not rung.startswith("model:") else model},
        confidence={"triage": confidence or {}},
        review=review,
        quarantined=quarantined,
        cost_usd=cost,
        latency_ms=latency,
    )


def run(examples: list[Example], outcomes: list[Outcome], declared: dict[str, str] | None = None) -> Evaluation:
    dataset = Dataset(Path("labelled.jsonl"), examples)
    scorers = scorers_for(dataset, SCHEMAS, declared or {})
    return evaluate(dataset, {o.id: o for o in outcomes}, scorers, ("triage-test", "1.2.3"))


# six tickets: three accepted (one wrong), one sent to review, one default flagged for review, one quarantined
EXAMPLES = [
    example("t1", ("vip",), category="billing"),
    example("t2", (), category="technical"),
    example("t3", ("vip", "de"), category="billing"),
    example("t4", (), category="technical"),
    example("t5", ("de",), category="account"),
    example("t6", (), category="billing"),
]
OUTCOMES = [
    outcome("t1", {"category": "billing"}, confidence={"category": 0.99}, cost=0.002, latency=100),
    outcome("t2", {"category": "technical"}, model="large", rung="model:large", confidence={"category": 0.9}),
    outcome("t3", {"category": "technical"}, confidence={"category": 0.7}, cost=0.001, latency=300),
    outcome("t4", {"category": "technical"}, confidence={"category": 0.4}, review=True),
    outcome("t5", {"category": "account"}, rung="default", review=True),
    outcome("t6", None),
]


def test_accuracy_accepted_accuracy_and_coverage() -> None:
    evaluation = run(EXAMPLES, OUTCOMES)
    data = evaluation.as_dict()
    field = data["fields"]["triage.category"]
    assert field["scorer"] == "exact" and field["n"] == 6
    assert field["accuracy"] == 4 / 6  # t1 t2 t4 t5 right; t3 wrong; t6 quarantined: wrong
    assert field["mean_score"] == 4 / 6
    assert field["accepted"] == 3 and field["accepted_accuracy"] == 2 / 3  # t1 t2 t3: review and quarantine are not
    assert (data["documents"], data["accepted"], data["review"], data["quarantined"]) == (6, 3, 2, 1)
    assert data["coverage"] == evaluation.coverage == 0.5
    assert (data["pipeline"], data["version"], data["dataset"]) == ("triage-test", "1.2.3", "labelled.jsonl")


def test_cost_and_latency_summaries() -> None:
    data = run(EXAMPLES, OUTCOMES).as_dict()
    assert data["cost_usd"] == pytest.approx(0.003) and data["cost_per_document_usd"] == pytest.approx(0.0005)
    assert data["latency_ms"]["p50"] == 0.0 and data["latency_ms"]["p95"] == pytest.approx(
        250.0
    )  # between 100 and 300, 3/4 of the way
    single = run(EXAMPLES[:1], [outcome("t1", {"category": "billing"}, latency=42)]).as_dict()
    assert single["latency_ms"] == {"p50": 42, "p95": 42}


def test_outcome_accepted_is_neither_quarantined_nor_for_review() -> None:
    assert [o.accepted for o in OUTCOMES] == [True, True, True, False, False, False]


def test_confusion_matrix_has_every_label_and_none_for_quarantined() -> None:
    matrix = run(EXAMPLES, OUTCOMES).as_dict()["fields"]["triage.category"]["confusion"]
    assert matrix == {
        "billing": {"billing": 1, "technical": 1, "account": 0, NONE: 1},
        "technical": {"billing": 0, "technical": 2, "account": 0, NONE: 0},
        "account": {"billing": 0, "technical": 0, "account": 1, NONE: 0},
    }


def test_confusion_lists_declared_labels_nobody_chose() -> None:
    matrix = run(EXAMPLES[:1], OUTCOMES[:1]).as_dict()["fields"]["triage.category"]["confusion"]
    assert list(matrix) == ["billing", "technical", "account"]
    assert matrix["technical"] == {"billing": 0, "technical": 0, "account": 0}


def test_confusion_of_booleans_required_or_optional() -> None:
    examples = [example("a", urgent=True, maybe=False), example("b", urgent=False, maybe=True)]
    outcomes = [
        outcome("a", {"urgent": True, "maybe": True}),
        outcome("b", {"urgent": True, "maybe": None}),
    ]
    fields = run(examples, outcomes).as_dict()["fields"]
    assert fields["triage.urgent"]["confusion"] == {
        "true": {"true": 1, "false": 0},
        "false": {"true": 1, "false": 0},
    }
    assert fields["triage.maybe"]["confusion"] == {
        "true": {"true": 0, "false": 0, NONE: 1},
        "false": {"true": 1, "false": 0, NONE: 0},
    }


def test_breakdowns_by_rung_model_and_tag() -> None:
    field = run(EXAMPLES, OUTCOMES).as_dict()["fields"]["triage.category"]
    assert field["by_rung"] == {
        "default": {"n": 1, "correct": 1, "accuracy": 1.0},
        "model:large": {"n": 1, "correct": 1, "accuracy": 1.0},
        "model:small": {"n": 3, "correct": 2, "accuracy": 2 / 3},
        "quarantined": {"n": 1, "correct": 0, "accuracy": 0.0},
    }
    assert field["by_model"] == {  # the model that answered; the rung where no model did
        "default": {"n": 1, "correct": 1, "accuracy": 1.0},
        "large": {"n": 1, "correct": 1, "accuracy": 1.0},
        "quarantined": {"n": 1, "correct": 0, "accuracy": 0.0},
        "small": {"n": 3, "correct": 2, "accuracy": 2 / 3},
    }
    assert field["by_tag"] == {
        "de": {"n": 2, "correct": 1, "accuracy": 0.5},
        "vip": {"n": 2, "correct": 1, "accuracy": 0.5},
    }


def test_curve_keeps_answers_at_or_above_each_threshold_and_counts_no_confidence_as_zero() -> None:
    curve = run(EXAMPLES, OUTCOMES).as_dict()["fields"]["triage.category"]["curve"]
    assert [row["threshold"] for row in curve] == list(THRESHOLDS)
    rows = {row["threshold"]: (row["kept"], row["coverage"], row["accuracy"]) for row in curve}
    assert rows[0.0] == (6, 1.0, 4 / 6)  # t5 (default) and t6 (quarantined) have no confidence: kept only at 0
    assert rows[0.5] == (3, 0.5, 2 / 3)  # t1 0.99, t2 0.9, t3 0.7
    assert rows[0.7] == (3, 0.5, 2 / 3)  # at or above: 0.7 is kept
    assert rows[0.8] == (2, 2 / 6, 1.0)
    assert rows[0.9] == (2, 2 / 6, 1.0)
    assert rows[0.95] == (1, 1 / 6, 1.0)
    assert rows[0.99] == (1, 1 / 6, 1.0)


def test_curve_is_absent_without_any_confidence_and_accuracy_none_when_nothing_is_kept() -> None:
    plain = run(EXAMPLES[:2], [outcome("t1", {"category": "billing"}), outcome("t2", {"category": "billing"})])
    assert "curve" not in plain.as_dict()["fields"]["triage.category"]
    low = run(EXAMPLES[:1], [outcome("t1", {"category": "billing"}, confidence={"category": 0.3})])
    curve = low.as_dict()["fields"]["triage.category"]["curve"]
    assert curve[-1] == {"threshold": 0.99, "kept": 0, "coverage": 0.0, "accuracy": None}


_documents = st.lists(
    st.tuples(st.booleans(), st.one_of(st.none(), st.floats(0, 1)), st.booleans()), min_size=1, max_size=30
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_curve_coverage_never_rises_with_the_threshold(documents: list[tuple[bool, float | None, bool]]) -> None:
    examples = [example(f"d{i}", category="billing") for i in range(len(documents))]
    outcomes = [
        outcome(
            f"d{i}",
            None if quarantined else {"category": "billing" if right else "technical"},
            confidence=None if confidence is None else {"category": confidence},
        )
        for i, (right, confidence, quarantined) in enumerate(documents)
    ]
    field = run(examples, outcomes).fields["triage.category"]
    curve = field.curve(tuple(sorted({0.0, *(c for _, c, _ in documents if c is not None), 0.5, 1.0})))
    assert curve[0]["coverage"] == 1.0 and curve[0]["kept"] == len(documents)  # threshold 0 keeps every document
    for before, after in itertools.pairwise(curve):
        assert after["coverage"] <= before["coverage"] and after["kept"] <= before["kept"]
    for row in curve:
        assert row["accuracy"] is None or 0.0 <= row["accuracy"] <= 1.0
        assert (row["accuracy"] is None) == (row["kept"] == 0)


# ---- other scorers through scoring --------------------------------------------------------------


def test_set_fields_report_micro_precision_and_recall() -> None:
    examples = [
        example("a", labels=["refund", "invoice"]),
        example("b", labels=["login"]),
        example("c", labels=["crash", "export"]),
    ]
    outcomes = [
        outcome("a", {"labels": ["refund", "invoice", "vat"]}),  # 2 of 3 predicted right, 2 of 2 found
        outcome("b", {"labels": []}),  # 0 predicted, 1 missed
        outcome("c", {"labels": ["crash", "export"]}),
    ]
    field = run(examples, outcomes).as_dict()["fields"]["triage.labels"]
    assert field["scorer"] == "set"
    assert field["precision"] == 4 / 5 and field["recall"] == 4 / 5
    assert field["accuracy"] == 1 / 3
    assert field["mean_score"] == pytest.approx((2 * 2 / 5 + 0 + 1) / 3)
    assert "confusion" not in field


def test_set_recall_counts_the_labels_of_quarantined_documents_and_missing_fields() -> None:
    examples = [
        example("a", labels=["refund", "invoice"]),
        example("b", labels=["login", "2fa"]),
        example("c", labels=["x"]),
    ]
    outcomes = [outcome("a", {"labels": ["refund", "invoice"]}), outcome("b", None), outcome("c", {"summary": "s"})]
    field = run(examples, outcomes).as_dict()["fields"]["triage.labels"]
    assert field["precision"] == 1.0
    assert field["recall"] == 2 / 5  # the pipeline found 2 of the dataset's 5 labels


def test_declared_scorers_tolerance_nested_fields_and_null_outputs() -> None:
    examples = [
        example("a", amount=100.0, summary="Double charge.", **{"address.city": "Lyon", "address.zone": "eu"}),
        example("b", amount=100.0, summary="app crashes", **{"address.city": "Berlin", "address.zone": "eu"}),
    ]
    outcomes = [
        outcome("a", {"amount": 100.9, "summary": "double  CHARGE", "address": {"city": "lyon", "zone": "eu"}}),
        outcome("b", {"amount": 98.0, "summary": None, "address": {"city": "Berlin", "zone": "us"}}),
    ]
    evaluation = run(examples, outcomes, {"triage.address.city": "normalised"})
    fields = evaluation.as_dict()["fields"]
    assert fields["triage.amount"]["scorer"] == "tolerance:1%" and fields["triage.amount"]["accuracy"] == 0.5
    assert fields["triage.summary"]["scorer"] == "normalised" and fields["triage.summary"]["accuracy"] == 0.5
    assert fields["triage.address.city"]["scorer"] == "normalised" and fields["triage.address.city"]["accuracy"] == 1
    zone = fields["triage.address.zone"]  # an enum behind a $ref: exact, with its confusion
    assert zone["scorer"] == "exact" and zone["accuracy"] == 0.5
    assert zone["confusion"] == {"eu": {"eu": 1, "us": 1}, "us": {"eu": 0, "us": 0}}


def test_dataset_scorers_win_over_declared_ones_which_win_over_defaults() -> None:
    dataset = Dataset(Path("d.jsonl"), [example("a", summary="s", amount=1.0)], {"triage.summary": "fuzzy:0.5"})
    chosen = scorers_for(dataset, SCHEMAS, {"triage.summary": "exact", "triage.amount": "tolerance:0.5"})
    assert {name: kind for name, (kind, _, _) in chosen.items()} == {
        "triage.summary": "fuzzy:0.5",
        "triage.amount": "tolerance:0.5",
    }
    bad = Dataset(Path("d.jsonl"), [example("a", summary="s")], {"triage.summary": "levenshtein"})
    with pytest.raises(ScorerError):
        scorers_for(bad, SCHEMAS, {})


def test_a_null_label_against_a_null_output_is_right_but_not_against_quarantine() -> None:
    examples = [example("a", summary=None), example("b", summary=None)]
    field = run(examples, [outcome("a", {"summary": None}), outcome("b", None)]).as_dict()["fields"]["triage.summary"]
    assert field["accuracy"] == 0.5 and field["by_rung"]["quarantined"]["correct"] == 0


# ---- JSON and reports -----------------------------------------------------------------------------

SENTINEL = "SENTINEL-DOC-TEXT-8812"


def _with_sentinel() -> Evaluation:
    examples = [
        Example("s1", {"id": "s1", "text": f"ticket {SENTINEL}"}, {"triage": {"category": "billing", "summary": "x"}}),
        Example(
            "s2", {"id": "s2", "text": SENTINEL}, {"triage": {"category": "technical", "summary": SENTINEL}}, ("t",)
        ),
        Example("s3", {"id": "s3", "text": SENTINEL}, {"triage": {"category": "account", "labels": [SENTINEL]}}),
    ]
    outcomes = [
        outcome("s1", {"category": "billing", "summary": f"said {SENTINEL}"}, confidence={"category": 0.9}),
        outcome("s2", {"category": "billing", "summary": SENTINEL}, review=True, latency=1500),
        outcome("s3", {"category": "account", "labels": [SENTINEL, "other"]}),
    ]
    return run(examples, outcomes)


def test_as_dict_is_json_serialisable_and_strict() -> None:
    evaluation = _with_sentinel()
    data = evaluation.as_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert set(data["fields"]) == {"triage.category", "triage.summary", "triage.labels"}


def test_reports_never_show_document_text_or_string_outputs() -> None:
    evaluation = _with_sentinel()
    for page in (text(evaluation), markdown(evaluation), as_html(evaluation)):
        assert SENTINEL not in page
        assert "triage.category" in page and "triage.summary" in page


def test_markdown_report_has_summary_fields_confusion_and_curve() -> None:
    page = markdown(_with_sentinel())
    assert page.startswith("# Evaluation of triage-test 1.2.3\n")
    assert "3 documents; **2 accepted (coverage 66.7%)**, 1 for review, 0 quarantined" in page
    assert "| triage.category | exact | 66.7% | 0.667 | 2 | 100.0% |" in page
    assert "| triage.labels | set | 0.0% (P 50.0%, R 100.0%) | 0.667 | 1 | 0.0% |" in page
    assert "| billing | 1 | 0 | 0 |" in page and "| technical | 1 | 0 | 0 |" in page  # rows of the confusion
    assert "| 0.90 | 1 | 33.3% | 100.0% |" in page  # the curve
    assert "| t | 1 | 0 | 0.0% |" in page  # by tag


def test_html_report_is_a_page_with_escaped_tables() -> None:
    examples = [example("a", category="billing")]
    dataset = Dataset(Path("<script>alert(1)</script>.jsonl"), examples)
    scorers = scorers_for(dataset, SCHEMAS, {})
    evaluation = evaluate(dataset, {"a": outcome("a", {"category": "billing"})}, scorers, ("p<b>", "1"))
    page = as_html(evaluation)
    assert page.startswith("<!doctype html>") and "<table>" in page and "<th>field</th>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "p&lt;b&gt;" in page
    assert "<b>1 accepted (coverage 100.0%)</b>" in page


def test_text_report_is_short_and_names_rungs_confusion_and_curve() -> None:
    lines = text(run(EXAMPLES, OUTCOMES)).splitlines()
    assert lines[0].startswith("eval triage-test 1.2.3 on labelled.jsonl: 6 documents, 3 accepted (coverage 50.0%)")
    assert "2 for review, 1 quarantined" in lines[0]
    assert lines.pop(1) == "  quarantined: no reason recorded (1)"  # reasons are counted, never quote documents
    assert lines[1] == "  triage.category (exact): accuracy 66.7%, accepted 3 at 66.7%"
    assert lines[2].startswith("    by rung: default 100.0% of 1, model:large 100.0% of 1, model:small 66.7% of 3")
    assert any(line.split() == ["billing", "1", "1", "0", "1"] for line in lines)
    assert lines[-1].startswith("    confidence >= t: 0.00 keeps 100.0% at 66.7%, 0.50 keeps 50.0% at 66.7%")


def test_quantiles_are_finite_and_ordered() -> None:
    outcomes = [outcome(f"t{i}", {"category": "billing"}, latency=float(i * 10)) for i in range(1, 7)]
    examples = [example(f"t{i}", category="billing") for i in range(1, 7)]
    latency = run(examples, outcomes).as_dict()["latency_ms"]
    assert math.isfinite(latency["p50"]) and latency["p50"] <= latency["p95"] <= 60
