"""Counting what a run did, for the CLI, ``--json`` and the run's row in the store."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from typing import Any

from steadyflow.audit import reasons
from steadyflow.audit.records import DecisionRecord
from steadyflow.core.document import Document
from steadyflow.core.vocabulary import ended_by


class Histogram:
    """Percentiles in flat memory: counts in buckets 5% wide (a value is reported within 5%), from 0.1 ms up."""

    _STEP = math.log(1.05)

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0

    def add(self, ms: float) -> None:
        """Count one value (milliseconds)."""
        self.counts[max(0, math.ceil(math.log(max(ms, 0.1) / 0.1) / self._STEP))] += 1
        self.n += 1

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the ``q`` quantile, or None with no values."""
        rank, seen = max(1, int(q * self.n + 0.5)), 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return round(0.1 * math.exp(bucket * self._STEP), 1)
        return None

    def percentiles(self) -> dict[str, float | None]:
        """{'p50': ms, 'p95': ms}, as the artifact shows them."""
        return {"p50": self.quantile(0.50), "p95": self.quantile(0.95)}


def _stored(record: DecisionRecord) -> dict[str, Any]:
    """A record in the form the store returns it, which :mod:`steadyflow.audit.reasons` reads."""
    return {
        "stage_id": record.stage_id,
        "status": record.status,
        "rung": record.rung,
        "rung_label": record.rung_label,
        "reason": record.reason,
        "attempts": record.attempts_json(),
        "verdicts": record.verdicts_json(),
    }


@dataclass
class RunSummary:
    """Totals of one run; ``as_json`` is what ``steadyflow run --json`` prints."""

    run_id: str
    pipeline: str
    flow_run_id: str | None = None
    documents: int = 0
    outputs: int = 0
    quarantined: int = 0
    review: int = 0
    by_rung: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    duration_s: float = 0.0
    output_path: str = ""
    quarantine_path: str = ""
    decisions_path: str = ""
    notes: list[str] = field(default_factory=list)
    resumed: int = 0
    """Documents an earlier attempt of this run completed; skipped, no model called."""
    interrupted_usd: float = 0.0
    """What the attempts a crash interrupted had cost (their documents ran again)."""
    budget_skipped: int = 0
    """Model calls not made because a budget was spent."""
    breakers_opened: dict[str, int] = field(default_factory=dict)
    """How often each model's circuit breaker opened."""
    audit: dict[str, Any] | None = None
    """The audit store this run wrote to and the chain's head after its last record (store, head_seq, head_hash)."""
    checks: Counter[str] = field(default_factory=Counter)
    """Failed check verdicts by 'check:action' (e.g. 'pii:fix', 'rule:reask', 'injection:flag')."""
    fallback_reasons: Counter[reasons.Key] = field(default_factory=Counter)
    """Why documents fell down the ladder (see :mod:`steadyflow.audit.reasons`); nested in ``as_json``."""
    latency_ms: Histogram = field(default_factory=lambda: Histogram())
    """Documents' own time (every stage, without queueing): p50/p95 in ``as_json``."""
    queue_ms: Histogram = field(default_factory=lambda: Histogram())
    """Documents' time waiting for a concurrency slot: p50/p95 in ``as_json``."""
    _timing: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    """(own ms, queue ms) of documents not yet finished, summed over their stages; bounded by documents in flight."""

    def add_records(self, records: list[DecisionRecord]) -> None:
        """Count a batch of decision records."""
        for record in records:
            # a document stopped by a check at some rung is counted as quarantined, not by that rung
            ended = ended_by(record.status, record.rung_label)
            self.by_rung[record.stage_id][ended] += 1
            self.tokens_in += record.tokens_in
            self.tokens_out += record.tokens_out
            self.cost_usd += record.cost_usd
            self.attempts += len(record.attempts)
            self.checks.update(f"{v.check}:{v.action}" for v in record.verdicts if not v.passed)
            self.fallback_reasons.update(reasons.document_reasons(_stored(record)))
            own, queued = self._timing.get(record.doc_id, (0.0, 0.0))
            self._timing[record.doc_id] = (own + record.latency_ms, queued + record.queue_ms)

    def add_documents(self, docs: list[Document]) -> None:
        """Count a batch of finished documents."""
        for doc in docs:
            self.documents += 1
            own, queued = self._timing.pop(doc.id, (None, None))
            if own is not None and queued is not None:
                self.latency_ms.add(own)
                self.queue_ms.add(queued)
            if doc.quarantined is not None:
                self.quarantined += 1
            else:
                self.outputs += 1
                self.review += int(doc.review)

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON types."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["fallback_reasons"] = reasons.nest(self.fallback_reasons)
        data["latency_ms"], data["queue_ms"] = self.latency_ms.percentiles(), self.queue_ms.percentiles()
        data["by_rung"] = {stage: dict(counts) for stage, counts in self.by_rung.items()}
        data["checks"] = dict(sorted(self.checks.items()))
        data["tokens"] = {"input": self.tokens_in, "output": self.tokens_out, "total": self.tokens_in + self.tokens_out}
        data["cost_usd"] = round(self.cost_usd, 6)
        data["duration_s"] = round(self.duration_s, 3)
        for key in ("tokens_in", "tokens_out"):
            data.pop(key)
        return data
