"""Why documents fell down the ladder: the failures above the rung each document ended on, grouped.

A document *fell* when it ended on a rung below the first model rung it tried (or, with no
model rung, below a rung that failed), or was quarantined. Its reasons are the failed
attempts (error kind and safe message) and the failed checks (reask, escalate, quarantine)
of the rungs above its final one, plus, for a quarantined document, the record's reason.
Each reason counts once per document.

Messages in records are already free of document text (see :mod:`steadyflow.audit.records`);
here they are only normalised so that documents failing the same way group together: numbers
that vary per document (list indexes, token counts, attempt counts) and hex ids become ``N``
and ``<id>``. HTTP status codes are kept: they are the reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from steadyflow.core.vocabulary import QUARANTINED, ended_by

TOP = 5
"""Reasons kept per stage, final rung and failing rung; the rest are summed as ``(other reasons)``."""

QUARANTINE = "quarantine"
"""The source under which a quarantined document's own reason is counted."""

_CAUSES = {"reask", "escalate", "quarantine"}
"""Check actions that move a document on (fix, filter, flag and noop leave it where it is)."""
_NOT_FAILURES = {"cache_miss"}
"""An empty cache is the normal case, not a reason a document fell."""
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_])(?<!HTTP )\d+(?:\.\d+)?")
_MAX_CHARS = 160

Key = tuple[str, str, int, str, str]
"""(stage, the rung the document ended on, index of the failing rung, its label, normalised reason)."""


def normalise(message: str) -> str:
    """One line without ids or per-document numbers, so equal failures group together."""
    text = " ".join(message.split())
    text = _NUMBER.sub("N", _HEX_ID.sub("<id>", text))
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1] + "…"


def _label(attempt: Mapping[str, Any]) -> str:
    if attempt["kind"] == "model":
        return f"model:{attempt['model']}"
    return str(attempt["model"] or attempt["kind"]) if attempt["kind"] == "cache" else str(attempt["kind"])


def _attempt_reason(attempt: Mapping[str, Any]) -> str:
    kind, error = attempt["error_kind"], attempt.get("error") or ""
    return normalise(f"{kind} ({error})" if error and error != kind else str(kind))


def _fell(record: Mapping[str, Any], attempts: list[Mapping[str, Any]]) -> bool:
    if record["status"] == QUARANTINED:
        return True
    final = record["rung"] if record["rung"] is not None else -1
    models = [a["rung"] for a in attempts if a["kind"] == "model"]
    if models:
        return final > min(models)
    return any(a["error_kind"] and a["error_kind"] not in _NOT_FAILURES and a["rung"] < final for a in attempts)


def document_reasons(record: Mapping[str, Any]) -> set[Key]:
    """The reasons one record's document fell (empty if it did not); ``record`` as stored (attempts as dicts)."""
    attempts: list[Mapping[str, Any]] = record["attempts"]
    if not _fell(record, attempts):
        return set()
    quarantined = record["status"] == QUARANTINED
    ended = ended_by(record["status"], record["rung_label"])
    final = record["rung"] if record["rung"] is not None else -1

    def above(rung: int | None) -> bool:  # every rung failed a quarantined document
        return quarantined or (rung is not None and rung < final)

    labels = {a["rung"]: _label(a) for a in attempts}
    stage = record["stage_id"]
    found = {
        (stage, ended, a["rung"], _label(a), _attempt_reason(a))
        for a in attempts
        if a["error_kind"] and a["error_kind"] not in _NOT_FAILURES and above(a["rung"])
    }
    for v in record["verdicts"]:
        if not v["passed"] and v["action"] in _CAUSES and above(v["rung"]):
            rung = v["rung"] if v["rung"] is not None else -1
            message = f"check {v['check']} ({v['action']})" + (f": {v['message']}" if v.get("message") else "")
            found.add((stage, ended, rung, labels.get(rung, "input"), normalise(message)))
    if quarantined and record.get("reason"):
        found.add((stage, ended, 1 << 30, QUARANTINE, normalise(str(record["reason"]))))
    if not found:
        found.add((stage, ended, 1 << 30, "unknown", "no failure recorded"))
    return found


def count(records: Iterable[Mapping[str, Any]]) -> Counter[Key]:
    """Documents per reason over ``records`` (stored form); memory grows with distinct reasons only."""
    counts: Counter[Key] = Counter()
    for record in records:
        counts.update(document_reasons(record))
    return counts


def nest(counts: Counter[Key], top: int = TOP) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """``{stage: {ended rung: {failing rung: {reason: documents}}}}``.

    Failing rungs come in ladder order, reasons most first.
    Only the ``top`` reasons of each failing rung are named; the others are summed as ``(other reasons)``.
    """
    grouped: dict[tuple[str, str, int, str], Counter[str]] = {}
    for (stage, ended, rung, label, reason), n in counts.items():
        grouped.setdefault((stage, ended, rung, label), Counter())[reason] += n
    out: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    for stage, ended, _, label in sorted(grouped, key=lambda k: (k[0], k[1], k[2], k[3])):
        ranked = sorted(grouped[(stage, ended, _, label)].items(), key=lambda item: (-item[1], item[0]))
        reasons = dict(ranked[:top])
        if len(ranked) > top:
            reasons["(other reasons)"] = sum(n for _, n in ranked[top:])
        merged = out.setdefault(stage, {}).setdefault(ended, {}).setdefault(label, {})
        for reason, n in reasons.items():  # one label at two rungs (the same model twice): one list
            merged[reason] = merged.get(reason, 0) + n
    return out


def one_line(by_source: Mapping[str, Mapping[str, int]]) -> str:
    """'model:small: invalid_output (category: literal_error) x12, timeout x3; rules: rules_failed (...) x27'."""
    return "; ".join(
        f"{label}: " + ", ".join(f"{reason} x{n}" for reason, n in reasons.items())
        for label, reasons in by_source.items()
    )
