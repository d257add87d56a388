"""True cost of a run: tokens and USD by stage, model and rung, failures and re-asks included; why documents fell."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from steadyflow.audit import reasons
from steadyflow.audit.ledger import RunLedger
from steadyflow.audit.log import DecisionLog
from steadyflow.core.vocabulary import ended_by


@dataclass
class CostLine:
    """One stage x producer (model, cache, rules, default) x rung."""

    stage: str
    producer: str
    rung: int
    attempts: int = 0
    failed: int = 0
    reasks: int = 0
    """Answers that failed validation and were asked again (instructor re-asks, validator re-asks)."""
    skipped: int = 0
    """Calls not made: open breaker, spent budget, passed deadline."""
    accepted: int = 0
    """Documents whose output came from this rung."""
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0
    usd_failed: float = 0.0
    """Part of ``usd`` spent on attempts that produced nothing accepted."""


_SKIPS = {"circuit_open", "budget_exhausted", "deadline"}


def run_overview(log: DecisionLog, ledger: RunLedger, run_id: str) -> dict[str, Any]:
    """Totals of a run over every attempt, in flat memory: documents from the ledger, outcomes and cost from the log.

    The cost is that of the records (as the artifact always showed it); :func:`run_cost` adds interrupted attempts.
    """
    documents, quarantined = ledger.documents(run_id)
    overview = log.overview(run_id)
    return {"documents": documents, "quarantined": quarantined, "outputs": documents - quarantined, **overview}


def run_cost(log: DecisionLog, ledger: RunLedger, run_id: str) -> dict[str, Any]:
    """The cost table of one run, and its totals, as plain JSON types (interrupted attempts from the ledger)."""
    records = log.records(run_id)
    lines: dict[tuple[str, str, int], CostLine] = {}
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in records:
        ended = ended_by(record["status"], record["rung_label"])
        outcomes[record["stage_id"]][ended] += 1
        attempts = record["attempts"]
        for i, attempt in enumerate(attempts):
            producer = attempt["model"] or attempt["kind"]
            key = (record["stage_id"], producer, attempt["rung"])
            line = lines.setdefault(key, CostLine(record["stage_id"], producer, attempt["rung"]))
            line.attempts += 1
            line.tokens_in += attempt["tokens_in"]
            line.tokens_out += attempt["tokens_out"]
            line.usd += attempt["cost_usd"]
            kind = attempt["error_kind"]
            if kind in _SKIPS:
                line.skipped += 1
            elif kind is not None:
                line.failed += 1
                line.usd_failed += attempt["cost_usd"]
                following = attempts[i + 1] if i + 1 < len(attempts) else None
                if kind == "invalid_output" and following is not None and following["rung"] == attempt["rung"]:
                    line.reasks += 1
            elif record["rung"] == attempt["rung"] and record["status"] != "quarantined":
                line.accepted += 1
            else:
                line.usd_failed += attempt["cost_usd"]  # answered, but its output was rejected by a check
    rows = sorted(lines.values(), key=lambda line: (line.stage, line.rung, line.producer))
    interrupted_usd, interrupted_tokens = ledger.interrupted(run_id)
    total_usd = sum(line.usd for line in rows) + interrupted_usd
    return {
        "run_id": run_id,
        "documents": len({r["doc_id"] for r in records}),
        "lines": [asdict(line) for line in rows],
        "outcomes": {stage: dict(counts) for stage, counts in outcomes.items()},
        "fallback_reasons": reasons.nest(reasons.count(records)),
        "total": {
            "usd": round(total_usd, 6),
            "usd_failed": round(sum(line.usd_failed for line in rows), 6),
            "tokens_in": sum(line.tokens_in for line in rows),
            "tokens_out": sum(line.tokens_out for line in rows),
            "attempts": sum(line.attempts for line in rows),
            "reasks": sum(line.reasks for line in rows),
            "usd_interrupted": round(interrupted_usd, 6),
            "tokens_interrupted": interrupted_tokens,
            "usd_per_10k_documents": round(total_usd / max(1, len({r["doc_id"] for r in records})) * 10_000, 4),
        },
    }
