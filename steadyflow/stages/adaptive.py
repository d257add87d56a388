"""Routing that adapts: online estimates per model rung and band of documents, and the entry they choose.

For each model rung of a stage and each band of the complexity estimator's score (``bands``; one
band is the class its thresholds give), :class:`Estimates` follows the last ``window`` documents
that reached that rung: how often its answers passed the stage's checks at once (counted over the
answers it gave: a 429 is its failure rate, not a wrong answer), how often it gave the accepted
output, what it cost, how long it took (quantiles), how often it failed on the wire or was skipped
by an open breaker. :meth:`Estimates.choose` enters a document at the rung with the lowest expected
cost plus latency (``latency_usd_per_s`` converts seconds into USD), where the rungs below count
with the chance the entry does not accept the document, among rungs whose pass rate is not
confidently below ``quality_floor`` (a one-sided 95% margin for the documents seen, so that a few
unlucky first documents do not shut a good model out). Above the floor quality is good enough;
below it, it has a price (``wrong_usd`` per failing first answer): a rung below the floor enters
only where it saves more than that. A small ``explore`` share of documents enters at the cheaper
neighbour of the entry, so that a rung which recovered is seen again.

Before anything is observed, every rung is assumed to pass as a good model does and to take as long
as the slowest rung seen, so the cheapest rung in the declared order enters first (its price is
known) and observations move the choice from there. Nothing here reads the document beyond its
estimator's score and class, or anything but the run's own outcomes.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyflow.audit.records import Attempt, Verdict
from steadyflow.spec.resilience import AdaptiveSpec

PRIOR_DOCS = 5
"""Documents the prior is worth: a rung's estimates follow what it does from its first few documents."""
PRIOR_LATENCY_MS = 1000.0
PRIOR_PASS = 0.95
"""What a rung is assumed to pass before it is seen: as a good model does, so the cheapest in order enters first."""
Z_95 = 1.645
"""One-sided 95% normal quantile: the margin a rate's estimate gets for the documents behind it."""
TYPICAL_TOKENS = (1000, 100)
"""Tokens in and out a price is multiplied by before any cost is observed."""


@dataclass
class Outcome:
    """What one document did on one rung."""

    first_pass: bool
    """Its first answer came back and passed the checks (no error, no re-ask)."""
    accepted: bool
    """The rung gave the output the stage accepted."""
    cost_usd: float
    latency_ms: float
    failed: bool
    """No answer at all: transport errors, timeouts, an open breaker."""


@dataclass
class Cell:
    """One model rung and one class: the last ``window`` outcomes."""

    outcomes: deque[Outcome]

    def rate(self, name: str, prior: float, answered_only: bool = False) -> float:
        """Share of outcomes with ``name`` true, with ``PRIOR_DOCS`` documents of ``prior`` mixed in.

        ``answered_only`` counts only documents the rung answered: how good its answers are says nothing of
        the 429s of an incident (those are its failure rate, and the ladder's fallback handles them).
        """
        seen = [o for o in self.outcomes if not (answered_only and o.failed)]
        hits = sum(1 for o in seen if getattr(o, name))
        return (hits + prior * PRIOR_DOCS) / (len(seen) + PRIOR_DOCS)

    def mean(self, name: str, prior: float) -> float:
        """Mean of ``name`` over outcomes, with the prior as ``PRIOR_DOCS`` documents."""
        total = sum(getattr(o, name) for o in self.outcomes)
        return (total + prior * PRIOR_DOCS) / (len(self.outcomes) + PRIOR_DOCS)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of latencies of documents that got an answer (None before any)."""
        values = sorted(o.latency_ms for o in self.outcomes if not o.failed)
        return values[min(len(values) - 1, int(q * len(values)))] if values else None


@dataclass
class Estimates:
    """Online estimates of one stage's model rungs per complexity class, and the entry they choose."""

    spec: AdaptiveSpec
    rungs: dict[int, str]
    """Model rung index -> model name, in ladder order."""
    prices: dict[str, tuple[float, float]]
    """Model -> (USD per million input tokens, per million output tokens)."""
    cells: dict[tuple[int, str], Cell] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def cell(self, rung: int, klass: str) -> Cell:
        """The estimates of ``rung`` for ``klass`` (created empty)."""
        key = (rung, klass)
        if key not in self.cells:
            self.cells[key] = Cell(deque(maxlen=self.spec.window))
        return self.cells[key]

    def band(self, score: float, klass: str) -> str:
        """The estimates' key for a document: its class, or with ``bands`` above 1 the band of its score.

        Thresholds tuned on one workload put another's short requests in the wrong class (a class that then
        mixes documents one model handles and documents it does not); bands let each kind find its entry.
        """
        if self.spec.bands <= 1:
            return klass
        low = min(self.spec.bands - 1, max(0, int(score * self.spec.bands)))
        return f"score {low / self.spec.bands:.2f}-{(low + 1) / self.spec.bands:.2f}"

    def _prior_cost(self, rung: int) -> float:
        price_in, price_out = self.prices.get(self.rungs[rung], (0.0, 0.0))
        return (TYPICAL_TOKENS[0] * price_in + TYPICAL_TOKENS[1] * price_out) / 1_000_000

    def estimate(self, rung: int, klass: str) -> dict[str, float]:
        """What the router believes of ``rung`` for ``klass``: pass, accept and failure rates, cost, latency."""
        cell = self.cell(rung, klass)
        prior_pass = min(1.0, max(PRIOR_PASS, self.spec.quality_floor + 0.02))
        latency = cell.quantile(0.5)
        return {
            "pass": round(cell.rate("first_pass", prior_pass, answered_only=True), 4),
            "accept": round(cell.rate("accepted", prior_pass), 4),
            "failed": round(cell.rate("failed", 0.0), 4),
            "cost_usd": cell.mean("cost_usd", self._prior_cost(rung)),
            "latency_ms": round(self._prior_latency(klass) if latency is None else latency, 1),
            "n": sum(1 for o in cell.outcomes if not o.failed),
        }

    def _prior_latency(self, klass: str) -> float:
        """An unseen rung's latency: the slowest median seen on the band's other rungs (a clock's unit, not a guess)."""
        seen = [q for rung in self.rungs if (q := self.cell(rung, klass).quantile(0.5)) is not None]
        return max(seen, default=PRIOR_LATENCY_MS)

    @staticmethod
    def _may_pass(found: dict[str, float]) -> float:
        """How well a rung may pass: its pass rate over the answers it gave, plus a one-sided 95% margin for few.

        A rung stays an entry until its rate is *confidently* below the floor: two unlucky first documents do not
        shut a good model out for the rest of the run (it would then only be seen by exploration).
        """
        rate = found["pass"]
        return rate + Z_95 * math.sqrt(rate * (1 - rate) / (found["n"] + PRIOR_DOCS))

    def _expected(self, order: list[int], at: int, found: dict[int, dict[str, float]]) -> float:
        """Expected cost plus latency of entering at ``order[at]``: each rung below weighted by the chance it runs."""
        total, reach = 0.0, 1.0
        price = {
            rung: found[rung]["cost_usd"] + self.spec.latency_usd_per_s * found[rung]["latency_ms"] / 1000
            for rung in order
        }
        for rung in order[at:]:
            total += reach * price[rung]
            reach *= 1 - found[rung]["accept"]
        # a document no model accepts ends on rules, a default or a reviewer. Its price here is a tie-breaker more
        # than a cost (twice the dearest call): of two rungs alike, the first enters and the second catches it
        return total + reach * 2 * max(price.values())

    def choose(self, klass: str) -> tuple[int, dict[str, Any]]:
        """The entry rung for a document of ``klass``, and the estimates that chose it (for its record)."""
        order = list(self.rungs)
        found = {rung: self.estimate(rung, klass) for rung in order}
        scores = {rung: self._expected(order, i, found) for i, rung in enumerate(order)}
        eligible = [r for r in order if self._may_pass(found[r]) >= self.spec.quality_floor]
        if eligible:
            entry, why = min(eligible, key=lambda r: (scores[r], order.index(r))), "cheapest above the floor"
            entry, why = self._below_floor(order, entry, eligible, found, scores) or (entry, why)
        else:
            entry, why = max(order, key=lambda r: (found[r]["pass"], -order.index(r))), "best pass rate (none above)"
            # every rung below the floor: with a price for quality, the best one still has to be worth its cost
            entry, why = self._below_floor(order, entry, [entry], found, scores) or (entry, why)
        at = order.index(entry)
        if at > 0 and self.rng.random() < self.spec.explore:
            # the cheaper neighbour only: it is what could replace the entry once it recovers; the rungs below the
            # entry are seen anyway, whenever the entry does not accept a document
            entry, why = order[at - 1], "explore"
        shown = {self.rungs[r]: {**found[r], "score": round(scores[r], 6)} for r in order}
        for values in shown.values():
            values["cost_usd"] = round(values["cost_usd"], 8)
        return entry, {"why": why, "estimates": shown}

    def _below_floor(
        self,
        order: list[int],
        best: int,
        eligible: list[int],
        found: dict[int, dict[str, float]],
        scores: dict[int, float],
    ) -> tuple[int, str] | None:
        """A rung below the floor that saves more than ``wrong_usd`` per failing first answer it adds, if any.

        Above the floor, quality is good enough and cost and latency decide; below it, quality has a price. A
        small model whose answers fail a fifth of the time is still the right entry for long documents where the
        large one costs fifteen times as much and takes twice as long (its failures go down the ladder), and the
        wrong one where it saves a few hundredths of a cent.
        """
        if self.spec.wrong_usd is None:
            return None
        priced = {
            rung: scores[rung] + self.spec.wrong_usd * max(0.0, found[best]["pass"] - found[rung]["pass"])
            for rung in order
            if rung not in eligible
        }
        cheaper = [rung for rung, value in priced.items() if value < scores[best]]
        if not cheaper:
            return None
        return min(cheaper, key=lambda r: (priced[r], order.index(r))), "below the floor, saves more than it risks"

    def observe(
        self, klass: str, attempts: Iterable[Attempt], accepted_rung: int | None, verdicts: Iterable[Verdict] = ()
    ) -> None:
        """Learn from one document's attempts (model rungs only); ``accepted_rung`` gave its output, if any.

        A check that failed on a rung's answer (``verdicts``: re-ask, escalate, quarantine) makes it no first pass.
        """
        rejected = {v.rung for v in verdicts if not v.passed and v.action in ("reask", "escalate", "quarantine")}
        by_rung: dict[int, list[Attempt]] = {}
        for attempt in attempts:
            # a hedge's cancelled call says nothing of its model: it was only slower this time
            if attempt.kind == "model" and attempt.rung in self.rungs and attempt.error_kind != "hedge_lost":
                by_rung.setdefault(attempt.rung, []).append(attempt)
        for rung, made in by_rung.items():
            answered = [a for a in made if a.error_kind is None or a.error_kind == "invalid_output"]
            # quality is what the answers were: a 429 or a 5xx retried is cost and latency, not a wrong answer
            reasked = any(a.error_kind == "invalid_output" for a in made)
            self.cell(rung, klass).outcomes.append(
                Outcome(
                    first_pass=bool(answered) and not reasked and rung not in rejected,
                    accepted=rung == accepted_rung,
                    cost_usd=sum(a.cost_usd for a in made),
                    latency_ms=sum(a.server_ms if a.server_ms is not None else a.latency_ms for a in made),
                    failed=not answered,
                )
            )

    def hedge_after_ms(self, rung: int, quantile: float, klass: str) -> float | None:
        """When to hedge a call of ``rung`` for ``klass``: the observed latency quantile (None before ~20 answers)."""
        cell = self.cell(rung, klass)
        if sum(1 for o in cell.outcomes if not o.failed) < 20:
            return None
        return cell.quantile(quantile)

    def save(self, path: Path) -> None:
        """Keep the estimates for the next run of the pipeline (JSON; only numbers and model names)."""
        data = {
            f"{self.rungs[rung]}|{klass}": [
                [o.first_pass, o.accepted, o.cost_usd, o.latency_ms, o.failed] for o in cell.outcomes
            ]
            for (rung, klass), cell in self.cells.items()
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # written aside, then renamed: a run killed mid-write, or two runs of the pipeline at once, leave one
        # whole file (the last to finish), never a torn one the next run would have to ignore
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(data))
        os.replace(partial, path)

    def load(self, path: Path) -> None:
        """Start from the estimates a previous run kept (models no longer in the ladder are ignored)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        index = {model: rung for rung, model in self.rungs.items()}
        for key, rows in data.items() if isinstance(data, dict) else ():
            model, _, klass = str(key).partition("|")
            if model in index and isinstance(rows, list):
                cell = self.cell(index[model], klass)
                for row in rows[-self.spec.window :]:
                    if isinstance(row, list) and len(row) == 5:
                        first, accepted, cost, latency, failed = row
                        cell.outcomes.append(
                            Outcome(bool(first), bool(accepted), float(cost), float(latency), bool(failed))
                        )


@dataclass
class HedgeBudget:
    """Hedged calls of one rung, kept under ``max_share`` of its calls."""

    max_share: float
    calls: int = 0
    hedges: int = 0

    def allow(self) -> bool:
        """Whether one more hedge stays within the share (counted once it is allowed)."""
        if self.hedges + 1 > self.max_share * max(self.calls, 1):
            return False
        self.hedges += 1
        return True
