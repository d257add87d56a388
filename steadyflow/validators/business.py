"""Business rules: CEL expressions over input, output and run (see :mod:`steadyflow.spec.cel`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import celpy

from steadyflow.spec.cel import CelRule, RuleTooCostly
from steadyflow.spec.validation import RuleCheck
from steadyflow.validators.base import Context, Finding


@lru_cache(maxsize=512)
def compiled(source: str) -> CelRule:
    """Each rule is compiled once per process (it was checked when the pipeline loaded)."""
    return CelRule(source)


def evaluate_rule(source: str, output: dict[str, Any], context: Context) -> tuple[bool, str | None]:
    """``(holds, why_not)``: holds only when the rule evaluates to boolean true.

    An error (a missing field, a wrong type) is false; so is a rule that takes
    too many steps or too long for this document (``why_not`` then says so):
    a costly rule fails its check, it never hangs the batch.
    """
    try:
        result = compiled(source).evaluate(context.activation(output))
    except RuleTooCostly as exc:
        return False, str(exc)
    except (celpy.CELEvalError, TypeError, ValueError):
        return False, None
    return isinstance(result, bool | celpy.celtypes.BoolType) and bool(result), None


def rule_holds(source: str, output: dict[str, Any], context: Context) -> bool:
    """True only when the rule evaluates to boolean true; an error or a too costly evaluation is false."""
    return evaluate_rule(source, output, context)[0]


def rule(spec: RuleCheck, output: dict[str, Any], context: Context) -> Finding:
    """The rule must hold."""
    holds, why_not = evaluate_rule(spec.rule, output, context)
    message = spec.message or f"business rule failed: {spec.rule}"
    return Finding(holds, f"{message} ({why_not})" if why_not else message)
