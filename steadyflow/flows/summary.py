"""Counting what a run did, for the CLI, ``--json`` and the run's row in the store."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from typing import Any

from steadyflow.audit.records import DecisionRecord
from steadyflow.stages.document import Document


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
    checks: Counter[str] = field(default_factory=Counter)
    """Failed check verdicts by 'check:action' (e.g. 'pii:fix', 'rule:reask', 'injection:flag')."""

    def add_records(self, records: list[DecisionRecord]) -> None:
        """Count a batch of decision records."""
        for record in records:
            # a document stopped by a check at some rung is counted as quarantined, not by that rung
            ended = "quarantined" if record.status == "quarantined" else (record.rung_label or record.status)
            self.by_rung[record.stage_id][ended] += 1
            self.tokens_in += record.tokens_in
            self.tokens_out += record.tokens_out
            self.cost_usd += record.cost_usd
            self.attempts += len(record.attempts)
            self.checks.update(f"{v.check}:{v.action}" for v in record.verdicts if not v.passed)

    def add_documents(self, docs: list[Document]) -> None:
        """Count a batch of finished documents."""
        for doc in docs:
            self.documents += 1
            if doc.quarantined is not None:
                self.quarantined += 1
            else:
                self.outputs += 1
                self.review += int(doc.review)

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON types."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["by_rung"] = {stage: dict(counts) for stage, counts in self.by_rung.items()}
        data["checks"] = dict(sorted(self.checks.items()))
        data["tokens"] = {"input": self.tokens_in, "output": self.tokens_out, "total": self.tokens_in + self.tokens_out}
        data["cost_usd"] = round(self.cost_usd, 6)
        data["duration_s"] = round(self.duration_s, 3)
        for key in ("tokens_in", "tokens_out"):
            data.pop(key)
        return data
