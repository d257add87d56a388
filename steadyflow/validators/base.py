"""What every check shares: its context, its finding, its verdict, and the plugin registry.

A check is a function ``(spec, output, context) -> Finding``. Built-in checks
register under the ``check:`` names of :mod:`steadyflow.spec.validation`;
plugins register with ``@validator("name")`` or through the
``steadyflow.validators`` entry-point group of an installed package, and are
used as ``{layer: ..., check: name, with: {...}, on_fail: ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steadyflow.audit.records import Verdict
from steadyflow.core.registry import Registry

__all__ = ["CHECKS", "Context", "Finding", "Verdict", "plugin", "validator"]

ENTRY_POINT_GROUP = "steadyflow.validators"


@dataclass
class Context:
    """What a check may look at besides the output. ``text`` is what the model saw (redacted if asked)."""

    text: str
    doc_id: str
    fields: dict[str, Any]
    run: dict[str, str]
    pii: list[str] = field(default_factory=list)
    injection: list[str] = field(default_factory=list)
    confidence: dict[str, float] | None = None
    """The answer being checked: the model's probability of each enum or boolean field's value, by field.

    None while the output is no model answer (rules, default, cache); empty when the endpoint gave none.
    """

    def activation(self, output: dict[str, Any]) -> dict[str, Any]:
        """The variables a CEL rule sees."""
        document = {
            "text": self.text,
            "id": self.doc_id,
            "fields": self.fields,
            "pii": self.pii,
            "injection": self.injection,
        }
        return {"input": document, "output": output, "run": self.run}


@dataclass
class Finding:
    """What one check found. ``fixed`` is the whole output with the fix applied, when the check has one.

    ``message`` goes back to the model on a re-ask and into the decision record:
    it names fields, rules and entity types, never document or PII text.
    """

    passed: bool
    message: str = ""
    fixed: dict[str, Any] | None = None
    fields: list[str] = field(default_factory=list)


Plugin = Callable[[dict[str, Any], dict[str, Any], Context], Finding]
"""A plugin check: ``(params from 'with:', output, context) -> Finding``."""

CHECKS: Registry[Plugin] = Registry("check", ENTRY_POINT_GROUP)
"""Plugin checks by name (the built-in ``check:`` names live in :data:`steadyflow.spec.validation.BUILTIN`)."""


def validator(name: str) -> Callable[[Plugin], Plugin]:
    """Register a plugin check under ``name``.

    For example::

        @validator("no_refund_promises")
        def no_refund_promises(params, output, context):
            bad = "we will refund" in output.get("summary", "").lower()
            return Finding(passed=not bad, message="summary promises a refund")
    """
    return CHECKS.register(name)


def plugin(name: str) -> Plugin | None:
    """The plugin registered as ``name``, loading installed packages' entry points once."""
    return CHECKS.get(name)


def plugin_names() -> list[str]:
    """Every registered plugin name (after loading entry points)."""
    return CHECKS.names()


def get_path(output: dict[str, Any], name: str) -> Any:
    """``output[a][b]`` for ``name`` 'a.b'; None when any part is missing."""
    current: Any = output
    for part in name.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def set_path(output: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """A copy of ``output`` with ``name`` ('a.b') set to ``value``."""
    parts = name.split(".")
    copy = dict(output)
    current = copy
    for part in parts[:-1]:
        current[part] = dict(current.get(part) or {})
        current = current[part]
    current[parts[-1]] = value
    return copy


def string_fields(output: dict[str, Any], names: list[str] | None) -> list[str]:
    """The named fields, or every top-level string (or list of strings) field."""
    if names is not None:
        return names
    return [
        k
        for k, v in output.items()
        if isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
    ]
