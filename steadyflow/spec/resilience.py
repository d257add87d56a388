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
    adaptive: AdaptiveSpec | None = Field(
        None,
        description="choose the entry from what the run observes per model and class (cost, latency, errors, "
        "checks passed) instead of 'enter' and prices alone",
    )


class AdaptiveSpec(Strict):
    """Outcome-driven entry: online estimates per model rung and band of scores (see stages/adaptive.py).

    A document enters at the model rung with the lowest expected cost plus latency (the rungs below
    counted with the chance they are needed) among those whose answers are not confidently below
    ``quality_floor`` at passing the stage's checks first time; estimates start from the models' prices
    and the ladder's order, and follow the last ``window`` documents of each model and band.
    """

    quality_floor: float = Field(
        0.93, gt=0, le=1, description="least share of first answers that pass the checks, for a rung to be an entry"
    )
    latency_usd_per_s: float = Field(
        0.001, ge=0, description="what one second of a document's latency is worth, against its cost in USD"
    )
    wrong_usd: float | None = Field(
        None,
        gt=0,
        description="what one more first answer that fails the checks is worth avoiding, in USD: a rung below the "
        "floor still enters where it saves more than this per answer it adds (none: never below the floor)",
    )
    explore: float = Field(
        0.03,
        ge=0,
        le=0.5,
        description="share of documents that enter at the rung just cheaper than their entry (none when the entry is "
        "the first rung), so that a rung which recovered is seen again",
    )
    window: int = Field(200, ge=10, le=100_000, description="documents per model and band the estimates follow")
    bands: int = Field(
        20,
        ge=1,
        le=100,
        description="estimates are kept per band of the estimator's score (1: per class): documents scored alike "
        "learn from each other, even where the class thresholds do not fit the traffic",
    )
    keep: bool = Field(False, description="keep the estimates across runs of this pipeline (in the user cache)")


class HedgeSpec(Strict):
    """A second call to the ladder's next model when the first has not answered in time; the first valid wins."""

    after_ms: float | None = Field(
        None, gt=0, description="hedge after this long; default: the latency quantile the run observed for this model"
    )
    quantile: float = Field(0.9, gt=0, lt=1, description="which observed latency quantile, when after_ms is not set")
    max_share: float = Field(0.1, gt=0, le=1, description="hedged calls at most, as a share of this rung's calls")


class CacheRung(Strict):
    """Answer from earlier accepted outputs: the same input (exact) or a similar one (semantic)."""

    cache: Literal["exact", "semantic"]
    threshold: float = Field(0.92, gt=0, le=1, description="semantic: minimum cosine similarity of the inputs")
    ttl_h: float | None = Field(None, gt=0, description="entries older than this are not used")
