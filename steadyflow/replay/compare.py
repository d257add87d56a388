"""Recorded against candidate, field by field: what changed, what it costs, and (with labels) who is right.

Fields are compared by their fingerprints (``audit.records.fingerprint``), so a change is found even
when the recorded text is no longer anywhere; where both texts are known, a string field also gets
a similarity (difflib's ratio of the normalised strings, as the ``fuzzy`` scorer computes it).
Reports hold field names, enum and boolean values, counts and scores: never document or output text.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from steadyflow.evals.scorers import Scorer, scorer
from steadyflow.replay.recorded import Side
from steadyflow.validators.base import get_path

_FUZZY = scorer("fuzzy:0")


@dataclass
class FieldChanges:
    """One ``stage.field`` over the replayed documents."""

    name: str
    compared: int = 0
    changed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    """'billing -> technical': documents, for enum and boolean fields (and '(quarantined)')."""
    similarities: list[float] = field(default_factory=list)
    """For changed strings whose recorded text is known."""

    def as_dict(self) -> dict[str, Any]:
        """Counts, the changed share, transitions and the mean similarity of changed text."""
        return {
            "compared": self.compared,
            "changed": self.changed,
            "changed_share": self.changed / self.compared if self.compared else None,
            "transitions": dict(self.transitions.most_common()),
            "similarity": statistics.fmean(self.similarities) if self.similarities else None,
            "similarity_known": len(self.similarities),
        }


@dataclass
class Accuracy:
    """A labelled field: how often the recorded and the candidate outputs match the labels."""

    name: str
    recorded: list[bool] = field(default_factory=list)
    candidate: list[bool] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Documents scored and both accuracies (None where nothing could be scored)."""
        old = sum(self.recorded) / len(self.recorded) if self.recorded else None
        new = sum(self.candidate) / len(self.candidate) if self.candidate else None
        return {"recorded": old, "candidate": new, "scored": len(self.candidate), "recorded_scored": len(self.recorded)}


def _value(side: Side, stage: str, name: str) -> tuple[bool, Any]:
    """(known, value) of a top-level field: from the output when known, else a closed field's fingerprint."""
    if side.outputs is not None and stage in side.outputs:
        return True, side.outputs[stage].get(name)
    kept = side.fingerprints.get(stage, {}).get(name, {})
    return ("value" in kept), kept.get("value")


def _kept(fingerprint: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What tells two fingerprints apart: a value or a digest (a length, kept since, follows from the digest)."""
    if fingerprint is None:
        return None
    return ("value" in fingerprint, fingerprint.get("value"), fingerprint.get("digest"))


def _label(value: Any) -> str:
    return "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))


@dataclass
class Comparison:
    """Every replayed document's recorded and candidate sides, compared."""

    fields: dict[str, FieldChanges] = field(default_factory=dict)
    rungs: Counter[str] = field(default_factory=Counter)
    """'stage: model:small -> rules': documents whose ending rung changed."""
    newly_quarantined: int = 0
    no_longer_quarantined: int = 0
    documents: int = 0
    recorded: list[Side] = field(default_factory=list)
    candidate: list[Side] = field(default_factory=list)
    accuracy: dict[str, Accuracy] = field(default_factory=dict)

    def add(self, old: Side, new: Side, expected: dict[str, dict[str, Any]] | None, scorers: dict[str, Scorer]) -> None:
        """Compare one document; ``expected`` are its labels or reviewed outputs, if any."""
        self.documents += 1
        self.recorded.append(_costs(old))
        self.candidate.append(_costs(new))
        self.newly_quarantined += int(new.quarantined and not old.quarantined)
        self.no_longer_quarantined += int(old.quarantined and not new.quarantined)
        for stage in sorted(set(old.rungs) | set(new.rungs)):
            before, after = old.rungs.get(stage, "-"), new.rungs.get(stage, "-")
            if before != after:
                self.rungs[f"{stage}: {before} -> {after}"] += 1
        for stage in sorted(set(old.fingerprints) | set(new.fingerprints)):
            names = set(old.fingerprints.get(stage, {})) | set(new.fingerprints.get(stage, {}))
            for name in sorted(names):
                self._field(stage, name, old, new)
        if expected:
            self._score(old, new, expected, scorers)

    def _field(self, stage: str, name: str, old: Side, new: Side) -> None:
        item = self.fields.setdefault(f"{stage}.{name}", FieldChanges(f"{stage}.{name}"))
        before = old.fingerprints.get(stage, {}).get(name)
        after = new.fingerprints.get(stage, {}).get(name)
        item.compared += 1
        if _kept(before) == _kept(after):
            return
        item.changed += 1
        known_old, value_old = _value(old, stage, name)
        known_new, value_new = _value(new, stage, name)
        closed = (before is None or "value" in before) and (after is None or "value" in after)
        if closed:
            shown_old = "(quarantined)" if before is None else _label(value_old)
            shown_new = "(quarantined)" if after is None else _label(value_new)
            item.transitions[f"{shown_old} -> {shown_new}"] += 1
        elif known_old and known_new and isinstance(value_old, str) and isinstance(value_new, str):
            item.similarities.append(_FUZZY(value_new, value_old).score)

    def _score(self, old: Side, new: Side, expected: dict[str, dict[str, Any]], scorers: dict[str, Scorer]) -> None:
        for stage, fields in expected.items():
            for name, label in fields.items():
                score = scorers.get(f"{stage}.{name}")
                if score is None:
                    continue
                item = self.accuracy.setdefault(f"{stage}.{name}", Accuracy(f"{stage}.{name}"))
                for side, into in ((old, item.recorded), (new, item.candidate)):
                    known, value = _nested(side, stage, name)
                    if known:
                        into.append(value is not None and score(value, label).correct)

    def as_dict(self) -> dict[str, Any]:
        """Field changes, rung changes, quarantines, cost/tokens/latency both ways, accuracies."""
        return {
            "documents": self.documents,
            "fields": {name: f.as_dict() for name, f in sorted(self.fields.items())},
            "rung_changes": dict(self.rungs.most_common()),
            "newly_quarantined": self.newly_quarantined,
            "no_longer_quarantined": self.no_longer_quarantined,
            "recorded": _totals(self.recorded),
            "candidate": _totals(self.candidate),
            "accuracy": {name: a.as_dict() for name, a in sorted(self.accuracy.items())},
        }


def _nested(side: Side, stage: str, name: str) -> tuple[bool, Any]:
    """(known, value) of a labelled field, dotted names included; a quarantined side is known and None."""
    if side.quarantined:
        return True, None
    if "." in name:
        if side.outputs is None or stage not in side.outputs:
            return False, None
        return True, get_path(side.outputs[stage], name)
    return _value(side, stage, name)


def _costs(side: Side) -> Side:
    return Side(cost_usd=side.cost_usd, tokens=side.tokens, latency_ms=side.latency_ms)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def _totals(sides: list[Side]) -> dict[str, Any]:
    n = len(sides)
    latency = [s.latency_ms for s in sides]
    usd, tokens = sum(s.cost_usd for s in sides), sum(s.tokens for s in sides)
    return {
        "cost_usd": round(usd, 6),
        "cost_per_document_usd": round(usd / n, 8) if n else None,
        "tokens": tokens,
        "tokens_per_document": tokens / n if n else None,
        "latency_ms": {"p50": _quantile(latency, 0.5), "p95": _quantile(latency, 0.95), "mean": _mean(latency)},
    }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
