"""Spend limits for a run and for a pipeline across runs.

Every model attempt is charged when it returns. Once a limit is reached, paid model
rungs are skipped (recorded as ``budget_exhausted``) and the ladder goes on to free
models, caches, rules and the default. Calls already in flight finish, so spend can
pass a limit by at most those calls, never by new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from steadyflow.audit.records import Attempt
from steadyflow.spec.models import Price
from steadyflow.spec.resilience import BudgetSpec, Limit


@dataclass
class Budget:
    """What a run may still spend."""

    spec: BudgetSpec | None = None
    pipeline_usd_before: float = 0.0
    pipeline_tokens_before: int = 0
    usd: float = 0.0
    tokens: int = 0
    skipped: int = 0

    def charge(self, attempts: list[Attempt]) -> None:
        """Add what these attempts cost."""
        self.usd += sum(a.cost_usd for a in attempts)
        self.tokens += sum(a.tokens_in + a.tokens_out for a in attempts)

    def _over(self, limit: Limit | None, usd: float, tokens: int) -> bool:
        return limit is not None and (
            (limit.usd is not None and usd >= limit.usd) or (limit.tokens is not None and tokens >= limit.tokens)
        )

    def exhausted(self) -> str | None:
        """Which budget is spent ('run' or 'pipeline'), or None."""
        if self.spec is None:
            return None
        if self._over(self.spec.run, self.usd, self.tokens):
            return "run"
        if self._over(
            self.spec.pipeline, self.pipeline_usd_before + self.usd, self.pipeline_tokens_before + self.tokens
        ):
            return "pipeline"
        return None

    def gate(self, price: Price) -> str | None:
        """Why a model with this price may not be called now, or None; free models always may."""
        if price.input_per_mtok == 0 and price.output_per_mtok == 0:
            return None
        spent = self.exhausted()
        if spent is None:
            return None
        self.skipped += 1
        return f"{spent} budget spent"
