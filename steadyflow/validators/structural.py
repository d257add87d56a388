"""Structural checks beyond the schema: cross-field comparisons and conditional requirements.

The schema itself (types, enums, lengths, patterns, required fields) is
enforced by the output model every answer is parsed into; these add the
relations between fields that a JSON Schema cannot state.
"""

from __future__ import annotations

import datetime as dt
import operator
from typing import Any

from steadyflow.spec.validation import CompareCheck, RequiredIfCheck
from steadyflow.validators.base import Context, Finding, get_path
from steadyflow.validators.business import rule_holds

_OPS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt}


def as_comparable(value: Any) -> Any:
    """Numbers stay numbers; ISO 8601 strings become dates or datetimes; other strings stay strings."""
    if isinstance(value, str):
        for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
            try:
                return parse(value)
            except ValueError:
                continue
    return value


def compare(spec: CompareCheck, output: dict[str, Any], context: Context) -> Finding:
    """``left op right`` over two output fields."""
    left, right = as_comparable(get_path(output, spec.left)), as_comparable(get_path(output, spec.right))
    if left is None or right is None:
        return Finding(True, f"{spec.left} or {spec.right} is empty: nothing to compare")
    try:
        holds = _OPS[spec.op](left, right)
    except TypeError:
        return Finding(
            False,
            spec.message or f"{spec.left} and {spec.right} cannot be compared (different kinds of value)",
            fields=[spec.left],
        )
    return Finding(
        bool(holds), spec.message or f"expected {spec.left} {spec.op} {spec.right}", fields=[spec.left, spec.right]
    )


def required_if(spec: RequiredIfCheck, output: dict[str, Any], context: Context) -> Finding:
    """``field`` must be filled when the rule ``when`` holds."""
    if not rule_holds(spec.when, output, context):
        return Finding(True)
    value = get_path(output, spec.field)
    filled = value not in (None, "", [], {})
    return Finding(filled, spec.message or f"{spec.field} is required when {spec.when}", fields=[spec.field])
