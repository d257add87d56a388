"""Decision records: what produced each output, at what cost. No raw text or PII.

Records hold hashes, names, numbers and error *kinds*; error messages are
built by our own code from error types and field names, never from document
or model text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import ValidationError

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_ERRORS = 5


def validation_summary(exc: ValidationError) -> str:
    """'category: literal_error; summary: missing': field paths and error types, safe for a record.

    ``str(exc)`` echoes each wrong value (``input_value=...``), i.e. model output that may quote the
    document. The path of an unexpected key is the model's text too, so it is ``(extra key)``, and
    any path part that is no plain field name (a dict key of a Python output class) is ``?``.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for err in errors[:_MAX_ERRORS]:
        loc = [str(p) if isinstance(p, int) or _FIELD_NAME.fullmatch(str(p)) else "?" for p in err["loc"]]
        if err["type"] == "extra_forbidden" and loc:
            loc[-1] = "(extra key)"
        parts.append(f"{'.'.join(loc) or '(root)'}: {err['type']}")
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS} more")
    return "; ".join(parts)


def error_type(exc: BaseException) -> str:
    """What a record may say about an unexpected exception: its type's name, never its message.

    An exception that stands for another (a check worker's, which sends back only the type) names that type.
    """
    named = getattr(exc, "error_type", None)
    return named if isinstance(named, str) else type(exc).__name__


def document_key(salt: bytes, doc_id: str) -> str:
    """How a store names a document: an HMAC of its id under the store's secret salt (the id itself when no salt)."""
    if not salt:
        return doc_id
    return hmac.new(salt, doc_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:24]


def output_hash(output: dict[str, Any]) -> str:
    """SHA-256 of an output's canonical JSON: whoever holds the output can show it is the one recorded."""
    canonical = json.dumps(output, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return text_hash(canonical)


def text_hash(text: str) -> str:
    """SHA-256 of a document's text: identifies an input without keeping it."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def document_hash(text: str, fields: dict[str, Any]) -> str:
    """SHA-256 of a document as its source gave it (text and fields): replay checks the input it reads again.

    Unlike a record's ``input_hash`` (the text one stage read), it does not depend on the pipeline.
    """
    canonical = json.dumps([text, fields], sort_keys=True, ensure_ascii=False, default=str)
    return text_hash(canonical)


def fingerprint(
    output: dict[str, Any], closed: Collection[str], digest: Callable[[str], str], numbers: bool = True
) -> dict[str, Any]:
    """What a record keeps of an output: values of closed fields (enums, booleans), a keyed digest of the rest.

    An enum's value is one of the pipeline's own words, never document text; any other value may quote
    the document, so only ``digest`` of its JSON is kept (the decision log's HMAC: equal values give equal
    digests within a folder, and a short value cannot be looked up in a table of hashes). Beside the
    digest, drift between runs gets a text's or list's ``length`` and, unless ``numbers`` is false (a
    stage that redacts PII), a number on a grid 5% wide (``approx``): never the text or the exact number.
    """
    kept: dict[str, Any] = {}
    for name, value in output.items():
        if name in closed and (value is None or isinstance(value, (str, bool, int, float))):
            kept[name] = {"value": value}
        else:
            kept[name] = {
                "digest": digest(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)),
                **_shape(value, numbers),
            }
    return kept


_STEP = math.log(1.05)


def _shape(value: Any, numbers: bool) -> dict[str, Any]:
    """A text's or list's ``length``; a finite number's ``approx`` on the 5% grid (within 2.5% of it), or nothing."""
    if isinstance(value, (str, list)):
        return {"length": len(value)}
    if not numbers or not isinstance(value, (int, float)) or isinstance(value, bool):
        return {}
    try:
        if not math.isfinite(value) or value == 0:
            return {"approx": 0} if value == 0 else {}
        step = round(math.log(abs(value)) / _STEP)
        return {"approx": float(f"{math.copysign(math.exp(step * _STEP), value):.4g}")}
    except (OverflowError, ValueError):  # an integer too large for a float, a grid point past the float range
        return {}


@dataclass
class Attempt:
    """One call (or one deterministic rung) tried for one document in one stage."""

    rung: int
    kind: str
    """'model', 'rules' or 'default'."""
    model: str | None = None
    error_kind: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    """Time on the wire (request sent to response headers in), or the whole call when no response came."""
    server_ms: float | None = None
    """The provider's own processing time, when its response says (openai-processing-ms)."""
    waited_ms: float = 0.0
    """Time spent waiting before this attempt: a Retry-After, or the ladder's own backoff."""
    wait_reason: str | None = None
    """'retry_after' (the endpoint asked for it), 'backoff' (our policy) or 'hedge' (the rung's call ran meanwhile)."""
    response_model: str | None = None
    """The model the provider says answered (its response's ``model``), which may differ from the one asked for."""
    system_fingerprint: str | None = None
    """The provider's ``system_fingerprint`` of the backend configuration that answered, when it returns one."""
    hedge: bool = False
    """This call was a hedge: sent to the next model because the rung's call had not answered in time."""
    started_at: float = field(default_factory=lambda: round(time.time(), 3))
    """When the call was sent (Unix time; for a step that calls nothing, when it ran): traces place it by this."""

    @property
    def ok(self) -> bool:
        """True when this attempt produced the accepted output."""
        return self.error_kind is None


@dataclass
class Verdict:
    """One check's verdict on one output (or input), as the decision record keeps it.

    ``message`` names fields, rules and entity types; never document or PII text.
    """

    check: str
    layer: str
    passed: bool
    action: str
    """'pass', or what was done: reask, fix, filter, escalate, quarantine, noop, flag."""
    message: str = ""
    rung: int | None = None
    duration_ms: float = 0.0


@dataclass
class DecisionRecord:
    """One record per document per stage."""

    run_id: str
    doc_id: str
    stage_id: str
    pipeline: str
    pipeline_version: str
    input_hash: str
    prompt_version: str | None
    status: str
    """'validated', 'rules', 'default' or 'quarantined'."""
    rung: int | None = None
    rung_label: str | None = None
    model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    review: bool = False
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    latency_ms: float = 0.0
    """The document's own time in this stage: from when its work started (it had a slot) to its end."""
    queue_ms: float = 0.0
    """Time the document waited for a concurrency slot before its work started (apart from ``latency_ms``)."""
    verdicts: list[Verdict] = field(default_factory=list)
    route: dict[str, Any] | None = None
    """The routing decision: estimator, score, complexity class, entry rung."""
    confidence: dict[str, float] | None = None
    """Field -> the probability the accepted model answer gave its value (enum and boolean fields), where
    the endpoint returned token log-probabilities, or the share of votes it won (``vote:``)."""
    source_ref: str | None = None
    """Where the run's source holds the document: ``line N`` of a table, or ``file`` (its name is the id, kept only
    as the record's key); the source itself is the run's (``runs.source``). Replay reads it again from there."""
    document_hash: str | None = None
    """:func:`document_hash` of the document as read: replay refuses an input that changed since."""
    outputs: dict[str, Any] | None = None
    """:func:`fingerprint` of the stage's output, when a run's decision log keyed it (None for ``process``)."""
    output_hash: str | None = None
    """:func:`output_hash` of the stage's output (None when quarantined)."""
    started_at: float | None = None
    """When the document's work in this stage started (Unix time); it ended ``latency_ms`` later."""

    @property
    def ended_at(self) -> float | None:
        """When the document's work in this stage ended (Unix time)."""
        return self.started_at + self.latency_ms / 1000 if self.started_at is not None else None

    @property
    def tokens_in(self) -> int:
        """Prompt tokens over every attempt, failed ones included."""
        return sum(a.tokens_in for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        """Completion tokens over every attempt, failed ones included."""
        return sum(a.tokens_out for a in self.attempts)

    @property
    def cost_usd(self) -> float:
        """Cost of every attempt, failed ones and re-asks included."""
        return sum(a.cost_usd for a in self.attempts)

    def attempts_json(self) -> list[dict[str, Any]]:
        """Attempts as plain dicts for storage."""
        names = _names(Attempt)
        return [{name: getattr(a, name) for name in names} for a in self.attempts]

    def verdicts_json(self) -> list[dict[str, Any]]:
        """Verdicts as plain dicts for storage."""
        names = _names(Verdict)
        return [{name: getattr(v, name) for name in names} for v in self.verdicts]


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass of plain values.

    ``asdict`` would deep-copy each value, which took a third of the time a record takes to be stored
    (benchmarks/audit.py), for values that need no copy.
    """
    return tuple(f.name for f in fields(cls))
