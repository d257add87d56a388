"""Scorers: how one output field is compared with its label, and which scorer a field gets by default."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyflow.core.scorer_names import parse_scorer
from steadyflow.evals.scorers import SCORER_KINDS, Score, ScorerError, default_scorer, normalise, scorer

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- exact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "expected", "correct"),
    [
        ("billing", "billing", True),
        ("billing", "Billing", False),
        (1, 1.0, True),
        ("1", 1, False),
        (True, True, True),
        (False, False, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (None, None, True),
        (None, "billing", False),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": True}, {"a": 1}, False),
        ([True, 0], [1, False], False),
        ([1, 2], [1, 2], True),
    ],
)
def test_exact_is_equality_with_booleans_never_equal_to_numbers(predicted: Any, expected: Any, correct: bool) -> None:
    score = scorer("exact")(predicted, expected)
    assert score.correct is correct
    assert score.score == (1.0 if correct else 0.0)


# ---- tolerance --------------------------------------------------------------------------------


def test_tolerance_absolute_accepts_up_to_the_limit_inclusive() -> None:
    within = scorer("tolerance:0.5")
    assert within(10.5, 10).correct and within(9.5, 10).correct and within(10, 10).correct
    assert not within(10.51, 10).correct and not within(9.4, 10).correct
    assert within(10.5, 10).score == 1.0 and within(11, 10).score == 0.0


def test_tolerance_percentage_is_relative_to_the_label() -> None:
    two_percent = scorer("tolerance:2%")
    assert two_percent(102, 100).correct and two_percent(98, 100).correct
    assert not two_percent(102.5, 100).correct
    assert two_percent(1020, 1000).correct and not two_percent(1021, 1000).correct  # 2% of 1000 is 20
    assert two_percent(-1.01, -1).correct and not two_percent(-1.03, -1).correct
    assert two_percent(0, 0).correct and not two_percent(0.001, 0).correct  # 2% of nothing is nothing


def test_tolerance_default_is_one_percent_relative() -> None:
    assert parse_scorer("tolerance") == ("tolerance", 0.01, True)
    default = scorer("tolerance")
    assert default(101, 100).correct and not default(101.5, 100).correct


def test_tolerance_compares_non_numbers_exactly() -> None:
    within = scorer("tolerance:5")
    assert within("a", "a").correct and not within("3", 3).correct
    assert not within(True, 1).correct  # a boolean is no number here
    assert not within(None, 3).correct


def test_tolerance_never_calls_a_non_finite_answer_close() -> None:
    within = scorer("tolerance:2%")
    assert not within(math.nan, 1.0).correct
    assert not within(math.inf, 1.0).correct
    assert not within(1.0, math.nan).correct
    assert not within(5.0, math.inf).correct  # 2% of infinity is no licence for any finite answer


def test_tolerance_handles_integers_beyond_float_range() -> None:
    within = scorer("tolerance:2%")
    huge = 10**400
    assert within(huge, huge).correct
    assert within(huge + huge // 100, huge).correct  # 1% off
    assert not within(huge * 2, huge).correct
    assert not scorer("tolerance:0.5")(huge, 1.0).correct


# ---- set --------------------------------------------------------------------------------------


def test_set_scores_f1_and_counts_hits_for_micro_averaging() -> None:
    score = scorer("set")(["a", "b", "c"], ["b", "c", "d", "e"])
    assert score.score == pytest.approx(2 * 2 / (3 + 4))
    assert not score.correct
    assert (score.true_positives, score.predicted, score.expected) == (2, 3, 4)


def test_set_ignores_order_duplicates_case_and_surrounding_punctuation() -> None:
    score = scorer("set")(["Refund", "invoice.", "refund"], ["invoice", "refund"])
    assert score.correct and score.score == 1.0
    assert (score.true_positives, score.predicted, score.expected) == (2, 2, 2)


def test_set_of_nothing_against_nothing_is_right_and_against_something_is_wrong() -> None:
    assert scorer("set")([], []).correct
    assert scorer("set")(None, []).correct
    empty = scorer("set")([], ["a"])
    assert not empty.correct and empty.score == 0.0 and (empty.predicted, empty.expected) == (0, 1)


def test_set_takes_a_single_value_as_a_one_element_set() -> None:
    assert scorer("set")("a", ["a"]).correct
    assert scorer("set")(["a"], "A").correct


# ---- normalised and fuzzy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "expected", "correct"),
    [
        ("Needs  a refund.", "needs a refund", True),
        ("  NEEDS\ta\nrefund!!", "needs a refund", True),
        ("ﬁle upload", "file upload", True),  # NFKC: the ligature is two letters
        ("Straße", "STRASSE", True),  # case folding, not lower()
        ("needs a refund", "needs no refund", False),
        ("a-b", "a b", False),  # punctuation inside is kept
        (3, 3, True),  # non-strings exactly
        (3, "3", False),
    ],
)
def test_normalised_compares_case_width_and_spacing_insensitively(predicted: Any, expected: Any, correct: bool) -> None:
    assert scorer("normalised")(predicted, expected).correct is correct
    assert scorer("normalized")(predicted, expected).correct is correct  # the American spelling is accepted


def test_normalise_folds_case_and_width_and_trims_punctuation_at_the_ends() -> None:
    assert normalise("  «Hello,   WORLD»!  ") == "hello, world"
    assert normalise("ＡＢＣ") == "abc"
    assert normalise("...") == ""


def test_fuzzy_correct_at_or_above_its_threshold_and_scores_the_similarity() -> None:
    at_80 = scorer("fuzzy:0.8")
    close = at_80("the customer wants a refund", "customer wants a refund")
    assert close.correct and 0.8 <= close.score < 1.0
    far = at_80("the customer wants a refund", "the parcel never arrived")
    assert not far.correct and far.score < 0.8
    assert scorer("fuzzy:0.95")("the customer wants a refund", "customer wants a refund").correct is False
    assert scorer("fuzzy:0")("abc", "xyz").correct  # a threshold of 0 accepts anything
    assert at_80("Refund!", "refund").score == 1.0  # compared normalised


def test_fuzzy_threshold_boundary_is_inclusive() -> None:
    # difflib ratio of "abcd" and "abce": 2 * 3 / 8 = 0.75
    assert scorer("fuzzy:0.75")("abcd", "abce").correct
    assert not scorer("fuzzy:0.76")("abcd", "abce").correct
    assert scorer("fuzzy:0.75")("abcd", "abce").score == pytest.approx(0.75)


def test_fuzzy_default_threshold_and_non_strings() -> None:
    assert parse_scorer("fuzzy") == ("fuzzy", 0.8, False)
    assert scorer("fuzzy")(1, 1).correct and not scorer("fuzzy")(1, "1").correct


def test_fuzzy_is_bounded_on_long_strings() -> None:
    long_a, long_b = "a" * 200_000, "a" * 199_000 + "b" * 1000
    score = scorer("fuzzy:0.9")(long_a, long_b)  # cut to 4000 characters: quick, and the cut parts are equal
    assert score.correct and score.score == 1.0


def test_embedding_scores_meaning_not_spelling() -> None:
    embedding = scorer("embedding:0.6")
    same = embedding("The parcel has not arrived yet", "The parcel has not arrived yet")
    near = embedding("The parcel has not arrived yet", "My package is still not delivered")
    far = embedding("The parcel has not arrived yet", "Please reset my password")
    assert same.correct and same.score == pytest.approx(1.0, abs=1e-4) and 0.0 <= same.score <= 1.0
    assert 0.0 <= far.score < near.score < same.score
    assert not far.correct
    assert scorer("embedding")(2, 2).correct  # non-strings exactly, without the model


# ---- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "exactly",
        "",
        "fuzzy:abc",
        "fuzzy:1.5",
        "embedding:-0.1",
        "tolerance:x",
        "tolerance:-1",
        "tolerance:inf",
        "set:2",
    ],
)
def test_bad_scorer_names_raise_scorer_error(name: str) -> None:
    with pytest.raises(ScorerError):
        scorer(name)


def test_an_unknown_scorer_lists_every_kind() -> None:
    with pytest.raises(ScorerError) as caught:
        scorer("levenshtein")
    message = str(caught.value)
    assert "levenshtein" in message
    for kind in SCORER_KINDS:
        assert kind in message
    assert issubclass(ScorerError, ValueError)  # a pipeline file's loader reports it at its key


def test_scorer_names_with_parameters_parse() -> None:
    assert parse_scorer("tolerance:0.5") == ("tolerance", 0.5, False)
    assert parse_scorer("tolerance:2%") == ("tolerance", pytest.approx(0.02), True)
    assert parse_scorer("fuzzy:0.85") == ("fuzzy", 0.85, False)
    assert parse_scorer("embedding") == ("embedding", 0.7, False)
    assert parse_scorer(" exact ") == ("exact", None, False)


# ---- defaults by JSON schema type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ({"enum": ["billing", "technical"], "type": "string"}, "exact"),
        ({"const": "x"}, "exact"),
        ({"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}]}, "exact"),
        ({"type": "boolean"}, "exact"),
        ({"anyOf": [{"type": "boolean"}, {"type": "null"}]}, "exact"),
        ({"type": "integer"}, "exact"),
        ({"type": "number"}, "tolerance:1%"),
        ({"anyOf": [{"type": "number"}, {"type": "null"}]}, "tolerance:1%"),
        ({"type": "array", "items": {"type": "string"}}, "set"),
        ({"type": "string"}, "normalised"),
        ({"type": ["string", "null"]}, "normalised"),
        ({"type": "object", "properties": {}}, "exact"),
        ({"$ref": "#/$defs/Address"}, "exact"),
        ({}, "exact"),
    ],
)
def test_default_scorer_by_json_schema_type(schema: dict[str, Any], name: str) -> None:
    assert default_scorer(schema) == name
    scorer(default_scorer(schema))  # every default is a valid name


# ---- properties ---------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_names = st.sampled_from(
    ["exact", "set", "normalised", "fuzzy", "fuzzy:0.3", "fuzzy:1", "tolerance", "tolerance:0.5", "tolerance:2%"]
)


@PROPERTY
@given(_names, _values, _values)
def test_any_two_values_score_between_zero_and_one(name: str, predicted: Any, expected: Any) -> None:
    score = scorer(name)(predicted, expected)
    assert isinstance(score, Score)
    assert 0.0 <= score.score <= 1.0
    assert score.true_positives <= min(score.predicted, score.expected)
    if score.correct and not name.startswith("fuzzy"):
        assert score.score == 1.0


@PROPERTY
@given(st.sampled_from(["exact", "set", "normalised", "fuzzy", "fuzzy:1", "tolerance:0", "tolerance:0%"]), _values)
def test_a_value_is_always_right_against_itself(name: str, value: Any) -> None:
    score = scorer(name)(value, value)
    assert score.correct and score.score == 1.0


@PROPERTY
@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip()


@PROPERTY
@given(st.text(max_size=40), st.text(max_size=40), st.floats(0, 1))
def test_fuzzy_is_correct_exactly_at_or_above_its_threshold(a: str, b: str, threshold: float) -> None:
    fuzzy = scorer(f"fuzzy:{threshold}")
    assert 0.0 <= fuzzy(a, b).score <= 1.0
    assert fuzzy(a, b).correct == (fuzzy(a, b).score >= threshold)
