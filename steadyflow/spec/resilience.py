"""DSL models for the ladder at full strength: breakers, budgets, routing, caches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steadyflow.spec.base import Strict


class BreakerSpec(Strict):
    """A circuit breaker per model endpoint (see steadyflow/providers/breaker.py)."""

    enabled: bool = True
    consecutive_failures: int = Field(5, ge=1, description="open after this many failures in a row")
    failure_rate: float = Field(0.5, gt=0, le=1, description="open when this share of the window failed")
    window: int = Field(20, ge=1, description="calls the failure rate looks at")
    min_calls: int = Field(10, ge=1, description="calls in the window before the rate counts")
    cooldown_s: float = Field(30.0, gt=0, description="open -> half-open after this long")
    half_open_probes: int = Field(1, ge=1, description="calls let through while half-open")


class Limit(Strict):
    """A spending limit; either or both of USD and tokens."""

    usd: float | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0)


class BudgetSpec(Strict):
    """Spend limits: per run, and per pipeline across runs (within ``pipeline_window_h``)."""

    run: Limit | None = None
    pipeline: Limit | None = None
    pipeline_window_h: float = Field(24.0, gt=0, description="the pipeline budget counts spend of the last N hours")


class RouteSpec(Strict):
    """Where a document enters the ladder, from an estimate of its complexity.

    The estimator (by registered name) scores a document in [0, 1] from the document
    itself; ``thresholds`` turn the score into a class; ``enter`` names, per class, the
    model rung where the ladder starts (rungs above it are skipped). Classes it does not
    name enter by the models' prices.
    """

    estimator: str = Field("heuristic", description="a registered complexity estimator")
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"moderate": 0.35, "complex": 0.7},
        description="lowest score of each class above 'simple'",
    )
    enter: dict[str, str] = Field(
        default_factory=dict,
        description="class -> model name of the rung to start at; a class not named here enters by price: "
        "the cheapest model rung for 'simple', the dearest for the highest class, in between for the others",
    )


class CacheRung(Strict):
    """Answer from earlier accepted outputs: the same input (exact) or a similar one (semantic)."""

    cache: Literal["exact", "semantic"]
    threshold: float = Field(0.92, gt=0, le=1, description="semantic: minimum cosine similarity of the inputs")
    ttl_h: float | None = Field(None, gt=0, description="entries older than this are not used")
