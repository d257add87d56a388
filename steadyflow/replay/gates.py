"""``replay --fail-on``: thresholds a candidate must stay within for CI to let it through.

Each gate is ``KIND[:FIELD]=LIMIT`` and fails when the measured value is *above* the limit:

=========================== ===========================================================================
``changed:FIELD=0.05``      share of compared documents whose FIELD changed (any field; enums most useful)
``accuracy_drop:FIELD=0.02`` recorded accuracy minus candidate accuracy on labelled or reviewed documents
``quarantined=0``           share of compared documents the candidate quarantines and the run did not
``cost=0.001``              the candidate's USD per document
``cost_increase=0.10``      the candidate's USD per document over the recorded, minus 1
``latency=3000``            the candidate's p50 milliseconds per document
``latency_increase=0.25``   the candidate's p50 latency over the recorded, minus 1
``inputs=0``                share of sampled documents not replayed (changed, missing, unverifiable)
=========================== ===========================================================================

A gate that cannot be measured (no labels for an accuracy gate, no document compared) fails: a
gate that passes because nothing was measured would let any change through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("changed", "accuracy_drop", "quarantined", "cost", "cost_increase", "latency", "latency_increase", "inputs")
_WITH_FIELD = ("changed", "accuracy_drop")


@dataclass(frozen=True)
class Gate:
    """One ``--fail-on`` threshold."""

    kind: str
    field: str
    limit: float
    spec: str


def parse_gates(specs: list[str]) -> list[Gate]:
    """Parse ``--fail-on`` values; ValueError with the expected form for a bad one."""
    gates = []
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        kind, _, field = name.partition(":")
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if not sep or kind not in KINDS or limit < 0 or limit != limit:
            raise ValueError(
                f"--fail-on {spec}: expected KIND[:FIELD]=LIMIT with KIND one of {', '.join(KINDS)} "
                "(e.g. changed:category=0.05, cost=0.001)"
            )
        if (kind in _WITH_FIELD) != bool(field):
            need = "needs a field (changed:category=0.05)" if kind in _WITH_FIELD else "takes no field"
            raise ValueError(f"--fail-on {spec}: {kind} {need}")
        gates.append(Gate(kind, field, limit, spec))
    return gates


def _field(names: list[str], wanted: str) -> str | None:
    matches = [n for n in names if n == wanted or n.split(".", 1)[1] == wanted]
    return matches[0] if len(matches) == 1 else None


def _ratio(new: float | None, old: float | None) -> float | None:
    if new is None or old is None:
        return None
    if old == 0:
        return 0.0 if new == 0 else float("inf")
    return new / old - 1


def measure(gate: Gate, data: dict[str, Any]) -> tuple[float | None, str]:
    """The value a gate compares with its limit (None: cannot be measured), and why not."""
    old, new = data["recorded"], data["candidate"]
    if gate.kind == "changed":
        name = _field(list(data["fields"]), gate.field)
        if name is None:
            return None, f"no single compared field '{gate.field}' ({', '.join(data['fields']) or 'none compared'})"
        return data["fields"][name]["changed_share"], "no document compared"
    if gate.kind == "accuracy_drop":
        name = _field(list(data["accuracy"]), gate.field)
        if name is None:
            return None, f"no labelled or reviewed values of '{gate.field}' among the replayed documents"
        acc = data["accuracy"][name]
        if acc["recorded"] is None or acc["candidate"] is None:
            return None, "no labelled document scored on both sides"
        return acc["recorded"] - acc["candidate"], ""
    if gate.kind == "quarantined":
        n = data["documents"]
        return (data["newly_quarantined"] / n if n else None), "no document compared"
    if gate.kind == "cost":
        return new["cost_per_document_usd"], "no document compared"
    if gate.kind == "cost_increase":
        return _ratio(new["cost_per_document_usd"], old["cost_per_document_usd"]), "no document compared"
    if gate.kind == "latency":
        return new["latency_ms"]["p50"], "no document compared"
    if gate.kind == "latency_increase":
        return _ratio(new["latency_ms"]["p50"], old["latency_ms"]["p50"]), "no document compared"
    inputs = data["inputs"]
    unused = len(inputs["changed"]) + len(inputs["missing"]) + inputs["unverifiable"] + inputs["not_comparable"]
    return (unused / data["sampled"] if data["sampled"] else None), "nothing sampled"


def failures(gates: list[Gate], data: dict[str, Any]) -> list[str]:
    """One line per gate that failed: the measured value against its limit, or why it could not be measured."""
    failed = []
    for gate in gates:
        value, why = measure(gate, data)
        if value is None:
            failed.append(f"{gate.spec}: cannot be measured ({why})")
        elif value > gate.limit:
            failed.append(f"{gate.spec}: measured {value:.4g}")
    return failed
