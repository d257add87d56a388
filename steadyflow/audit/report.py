"""True cost of a run: tokens and USD by stage, model and rung, failures and re-asks included; why documents fell.

And where routing sent them: why they entered where they did, hedges fired and won, what the hedges cost.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from steadyflow.audit import drift, reasons
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


def run_profiles(log: DecisionLog, ledger: RunLedger, run_id: str) -> tuple[drift.Profile, drift.Profile | None]:
    """This run's drift profile, and the previous finished run's of the same pipeline (None: there is none)."""
    current = drift.profile([run_id], log.profile_rows([run_id]))
    earlier = ledger.earlier_runs(run_id, 1)
    return current, drift.profile(earlier, log.profile_rows(earlier)) if earlier else None


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
        "routing": routing(records),
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


def routing(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage that routes: documents by how they entered and where (model), and its hedges.

    ``entries`` counts "why -> model" ("cheapest above the floor -> local", "explore -> mini", or "class simple"
    for fixed ``enter`` classes); ``hedges`` counts documents whose call was hedged, those the hedge won, and
    the USD of the hedged calls and of the calls a hedge cancelled (both are paid). Each record keeps the
    estimates its entry was chosen by (``route.adaptive.estimates``): ``steadyflow audit explain`` prints them.
    """
    stages: dict[str, dict[str, Any]] = {}
    for record in records:
        route, attempts = record.get("route"), record["attempts"]
        hedged = [a for a in attempts if a.get("hedge")]
        if not route and not hedged:
            continue
        stage = stages.setdefault(
            record["stage_id"], {"entries": defaultdict(int), "hedges": {"fired": 0, "won": 0, "usd": 0.0}}
        )
        if route:
            model = _model_of(attempts, route.get("entry"))
            why = (route.get("adaptive") or {}).get("why") or f"class {route.get('complexity', '?')}"
            stage["entries"][f"{why} -> {model}"] += 1
        if hedged:
            hedges = stage["hedges"]
            hedges["fired"] += 1
            hedges["won"] += int(_hedge_won(record))
            paid = [a for a in attempts if a.get("hedge") or a["error_kind"] == "hedge_lost"]
            hedges["usd"] = round(hedges["usd"] + sum(a["cost_usd"] for a in paid), 8)
    return {name: {**found, "entries": dict(sorted(found["entries"].items()))} for name, found in stages.items()}


def _hedge_won(record: dict[str, Any]) -> bool:
    """Whether the output came from a hedged call: the last answer on the accepted rung was the hedge's."""
    if record["status"] not in ("validated", "cached") or record["rung"] is None:
        return False
    answers = [a for a in record["attempts"] if a["rung"] == record["rung"] and a["error_kind"] is None]
    return bool(answers) and bool(answers[-1].get("hedge"))


def _model_of(attempts: list[dict[str, Any]], rung: int | None) -> str:
    """The model of the entry rung, as its first attempt names it (the rung's index when it made none)."""
    return next((a["model"] for a in attempts if a["rung"] == rung and a["model"]), f"rung {rung}")
