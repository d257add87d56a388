"""The rules extractor never raises anything but RulesFailed (issue 12, item 1).

It fills list fields from every match.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from steadyflow.spec.models import FieldRule, FieldSpec, RulesSpec
from steadyflow.spec.output_schema import compile_output
from steadyflow.stages.rules import MATCH_TIMEOUT_S, RulesFailed, extract

NEWS = "Acme Inc bought Foo Inc. Later Bar Inc joined; Acme Inc said nothing. Breaking: 3 deals this quarter."


def _model(**fields: dict[str, Any]) -> type[BaseModel]:
    return compile_output({name: FieldSpec.model_validate(spec) for name, spec in fields.items()}, "t")


def test_a_list_field_takes_every_match_once_in_document_order() -> None:
    model = _model(
        companies={"type": "list", "items": {"type": "string"}, "max_items": 2},
        counts={"type": "list", "items": {"type": "integer"}},
    )
    rules = RulesSpec(fields={"companies": FieldRule(regex=r"(\w+) Inc"), "counts": FieldRule(regex=r"\d+", group=0)})
    out = extract(rules, model, NEWS)
    assert out.model_dump() == {"companies": ["Acme", "Foo"], "counts": [3]}


def test_keywords_fill_a_list_with_every_value_that_occurs_most_hits_first() -> None:
    model = _model(topics={"type": "list", "items": {"enum": ["mergers", "earnings", "sports"]}})
    rules = RulesSpec(
        fields={
            "topics": FieldRule(keywords={"earnings": ["quarter"], "mergers": ["bought", "joined"], "sports": ["goal"]})
        }
    )
    assert extract(rules, model, NEWS).model_dump() == {"topics": ["mergers", "earnings"]}


def test_a_group_the_pattern_lacks_gives_nothing_and_the_default_its_turn() -> None:
    model = _model(buyer={"type": "string"})
    explicit = RulesSpec(fields={"buyer": FieldRule(regex=r"(\w+) bought", group=2, default="unknown")})
    assert extract(explicit, model, NEWS).model_dump() == {"buyer": "unknown"}
    implicit = RulesSpec(
        fields={"buyer": FieldRule(regex=r"\w+ Inc")}
    )  # group 1 of a pattern without groups: the match
    assert extract(implicit, model, NEWS).model_dump() == {"buyer": "Acme Inc"}


class Picky(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def _refuse(cls, value: str) -> str:
        raise LookupError("not a ValueError: pydantic lets it through")


def test_an_output_model_that_raises_its_own_error_is_a_rules_failure() -> None:
    with pytest.raises(RulesFailed, match="LookupError"):
        extract(RulesSpec(fields={"name": FieldRule(default="x")}), Picky, NEWS)


# --- property: any pattern that compiles, any document, any field type ---------------------------------

_ATOMS = st.sampled_from(
    [r"\w+", r"\d+", r"\s", ".", "a", "é", "東", r"[A-Z]\w*", r"\b", "^", "$", r"\p{L}+", "(?i)x", r"\n"]
)


def _patterns() -> st.SearchStrategy[str]:
    def wrap(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map(lambda p: p[0] + p[1]),
            st.tuples(inner, inner).map(lambda p: f"(?:{p[0]}|{p[1]})"),
            inner.map(lambda p: f"({p})"),
            inner.map(lambda p: f"(?P<n>{p})"),
            st.tuples(inner, st.sampled_from(["?", "*", "+", "{0,3}", "+?", "*+"])).map(lambda p: f"(?:{p[0]}){p[1]}"),
            inner.map(lambda p: f"(?={p})"),
            inner.map(lambda p: f"(?!{p})"),
            inner.map(lambda p: f"(?:{p})+(?:{p})+$"),  # backtracking-heavy shapes
        )

    built = st.recursive(_ATOMS, wrap, max_leaves=8)
    raw = st.text(max_size=20)  # anything at all that happens to compile
    return st.one_of(built, raw).filter(_compiles)


def _compiles(pattern: str) -> bool:
    try:
        regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError):
        return False
    return True


FIELD_TYPES: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "max_length": 5, "min_length": 1},
    {"type": "integer", "minimum": 0},
    {"type": "number"},
    {"type": "boolean"},
    {"enum": ["a", "b", "東"]},
    {"type": "list", "items": {"type": "string"}, "max_items": 3},
    {"type": "list", "items": {"type": "integer"}},
    {"type": "object", "fields": {"x": {"type": "string"}}},
]
_VALUES = st.one_of(
    st.none(), st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.lists(st.text(max_size=3), max_size=2)
)


@st.composite
def _rule(draw: st.DrawFn) -> FieldRule:
    values: dict[str, Any] = {}
    if draw(st.booleans()):
        values["regex"] = draw(_patterns())
        if draw(st.booleans()):
            values["group"] = draw(st.one_of(st.integers(0, 4), st.sampled_from(["n", "missing"])))
    if draw(st.booleans()):
        values["keywords"] = draw(
            st.dictionaries(
                st.sampled_from(["a", "b", "東", "1", "true"]),
                st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3),
                max_size=3,
            )
        )
    values["default"] = draw(_VALUES)
    return FieldRule.model_validate(values)


def _documents() -> st.SearchStrategy[str]:
    small = st.text(max_size=300)
    huge = st.tuples(st.text(min_size=1, max_size=40), st.integers(1_000, 5_000)).map(lambda p: p[0] * p[1])
    return st.one_of(st.just(""), small, huge)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data(), _documents())
def test_extract_returns_a_valid_output_or_raises_rules_failed_within_its_time_limits(
    data: st.DataObject, text: str
) -> None:
    types = data.draw(st.lists(st.sampled_from(FIELD_TYPES), min_size=1, max_size=4))
    optional = data.draw(st.lists(st.booleans(), min_size=len(types), max_size=len(types)))
    model = _model(**{f"f{i}": {**t, "optional": o} for i, (t, o) in enumerate(zip(types, optional, strict=True))})
    rules = RulesSpec(fields={f"f{i}": data.draw(_rule()) for i in range(len(types))})
    matches = sum(1 + sum(len(w) for w in (r.keywords or {}).values()) for r in rules.fields.values())
    started = time.perf_counter()
    failure: str | None = None
    try:
        output = extract(rules, model, text)
    except RulesFailed as exc:
        failure = str(exc)
    else:
        assert isinstance(output, model)
        model.model_validate(output.model_dump())
    assert failure is None or failure.startswith(("rules gave no valid value for: ", "the output model raised "))
    # each regex search and each keyword's count is bounded by the per-match limit; the rest is linear work
    assert time.perf_counter() - started < matches * MATCH_TIMEOUT_S + 2.0


def test_keywords_match_whole_words_in_any_case_and_phrases_across_line_breaks() -> None:
    model = _model(category={"enum": ["billing", "account", "technical"]})
    rules = RulesSpec(
        fields={
            "category": FieldRule(
                keywords={"billing": ["credit card", "refund"], "account": ["password"], "technical": ["error"]}
            )
        }
    )
    assert extract(rules, model, "My CREDIT\n   card was charged").model_dump() == {"category": "billing"}
    assert extract(rules, model, "errors everywhere, no password").model_dump() == {
        "category": "account"
    }  # not inside 'errors'
    # a tie keeps the value declared first
    assert extract(rules, model, "password error").model_dump() == {"category": "account"}
