"""A business rule is evaluated within bounds: a too costly rule fails its check with a reason, never hangs."""

from __future__ import annotations

import time

import pytest

from steadyflow.spec.validation import RuleCheck
from steadyflow.validators.base import Context
from steadyflow.validators.business import evaluate_rule, rule


def _context(items: int) -> Context:
    return Context(text="t", doc_id="d", fields={"xs": list(range(items))}, run={})


def test_nested_macros_over_a_big_document_stop_with_a_reason() -> None:
    source = "input.fields.xs.all(a, input.fields.xs.all(b, a + b >= 0))"  # allowed: two macros deep
    started = time.monotonic()
    holds, why = evaluate_rule(source, {}, _context(5_000))
    assert time.monotonic() - started < 3
    assert not holds and why is not None and "rule evaluation stopped" in why
    finding = rule(RuleCheck(layer="business", check="rule", rule=source), {}, _context(5_000))
    assert not finding.passed and "rule evaluation stopped" in finding.message


def test_the_same_rule_on_a_small_document_holds() -> None:
    source = "input.fields.xs.all(a, input.fields.xs.all(b, a + b >= 0))"
    assert evaluate_rule(source, {}, _context(10)) == (True, None)


def test_a_pattern_built_from_a_document_never_prints_it(capfd: pytest.CaptureFixture[str]) -> None:
    # celpy's matches() used google-re2, whose C++ log printed the bad pattern (document text) on stderr
    secret = "Jane Doe SSN 123-45-6789 (?<=secret"
    context = Context(secret, "d1", {}, {})
    assert evaluate_rule("input.text.matches(input.text)", {}, context) == (False, None)
    assert evaluate_rule("input.text.matches('(?<=Doe) SSN')", {}, context) == (True, None)  # look-behind works
    captured = capfd.readouterr()
    assert "123-45-6789" not in captured.err + captured.out
