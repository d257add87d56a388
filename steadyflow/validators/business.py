"""Business rules: CEL expressions over input, output and run (see :mod:`steadyflow.spec.cel`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import celpy

from steadyflow.spec.cel import CelRule
from steadyflow.spec.validation import RuleCheck
from steadyflow.validators.base import Context, Finding


@lru_cache(maxsize=512)
def compiled(source: str) -> CelRule:
    """Each rule is compiled once per process (it was checked when the pipeline loaded)."""
    return CelRule(source)


def rule_holds(source: str, output: dict[str, Any], context: Context) -> bool:
    """True only when the rule evaluates to boolean true; an error (a missing field, a wrong type) is false."""
    try:
        result = compiled(source).evaluate(context.activation(output))
    except (celpy.CELEvalError, TypeError, ValueError):
        return False
    return isinstance(result, bool | celpy.celtypes.BoolType) and bool(result)


def rule(spec: RuleCheck, output: dict[str, Any], context: Context) -> Finding:
    """The rule must hold."""
    return Finding(rule_holds(spec.rule, output, context), spec.message or f"business rule failed: {spec.rule}")
