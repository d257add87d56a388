"""Fleet scenarios of our own: the shared scenario's endpoints with other shares, sizes, incidents and quality.

A router tuned on one scenario proves little; :func:`generate` draws another from a seed, varying
what differs between real workloads: how requests split into complexity classes and how long they
are, when which endpoint degrades and how, and how often each endpoint is right per class.
Endpoints keep the shared scenario's prices, latencies and error rates, so ratios against the direct
call and the static chain stay comparable; so does the share of wrong answers the checks catch (a
property of the pipeline, not of the traffic). The router never reads a scenario: only the
benchmark and the simulator do.

The ranges stay where the routing targets (p50 at most 0.45x the direct call's) can be met at all
on this fleet. The median request must be answered well under half of what frontier-a takes, which
only local does, and only for short answers: at 40 output tokens local's median is 0.42x
frontier-a's, at 60 it is 0.48x whatever the router does. So simple requests are at least 62% of
the traffic, their answers at most 45 tokens, and local right on at least 89% of them; earlier,
wider ranges (simple from 45%, answers to 70 tokens, local from 84%) drew scenarios where a plan
fitted by hand to the scenario measured p50 0.486x, and racing local against mini 0.503x.
"""

from __future__ import annotations

import copy
import random
from typing import Any

BASE: dict[str, Any] = {
    "time_scale": 20,
    "endpoints": {
        "frontier-a": {
            "price": {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
            "ttft_ms": {"median": 650, "p95": 1900},
            "tokens_per_s": 95,
            "errors": {"rate_429": 0.015, "rate_5xx": 0.01, "rate_timeout": 0.005},
            "prompted_json_invalid": 0.06,
            "schema_json_invalid": 0.002,
        },
        "frontier-b": {
            "price": {"input_per_mtok": 3.00, "output_per_mtok": 15.00},
            "ttft_ms": {"median": 800, "p95": 2200},
            "tokens_per_s": 70,
            "errors": {"rate_429": 0.01, "rate_5xx": 0.01, "rate_timeout": 0.005},
            "prompted_json_invalid": 0.05,
            "schema_json_invalid": 0.002,
        },
        "mini": {
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
            "ttft_ms": {"median": 350, "p95": 900},
            "tokens_per_s": 180,
            "errors": {"rate_429": 0.02, "rate_5xx": 0.01, "rate_timeout": 0.003},
            "prompted_json_invalid": 0.10,
            "schema_json_invalid": 0.005,
        },
        "local": {
            "price": {"input_per_mtok": 0.0, "output_per_mtok": 0.0},
            "ttft_ms": {"median": 120, "p95": 400},
            "tokens_per_s": 120,
            "errors": {"rate_429": 0.0, "rate_5xx": 0.005, "rate_timeout": 0.002},
            "prompted_json_invalid": 0.25,
            "schema_json_invalid": 0.01,
        },
    },
}
"""The shared scenario's endpoints (benchmarks/scenarios/fleet.yaml): what a generated scenario keeps."""

DETECTABLE = 0.8
"""Share of wrong answers the benchmark pipelines' checks catch (the shared scenario's)."""

_QUALITY = {  # ranges of the share of right answers, per endpoint and class
    "frontier-a": {"simple": (0.97, 0.995), "moderate": (0.93, 0.98), "complex": (0.88, 0.96)},
    "frontier-b": {"simple": (0.97, 0.995), "moderate": (0.93, 0.98), "complex": (0.87, 0.95)},
    "mini": {"simple": (0.93, 0.98), "moderate": (0.82, 0.93), "complex": (0.60, 0.80)},
    "local": {"simple": (0.89, 0.95), "moderate": (0.55, 0.78), "complex": (0.30, 0.50)},
}
_SIZES = {  # ranges of input tokens, and output tokens, per class
    "simple": ((200, 600), (25, 45)),
    "moderate": ((800, 2000), (80, 160)),
    "complex": ((2500, 6000), (180, 400)),
}


def _incident(rng: random.Random, endpoint: str) -> dict[str, Any]:
    start = round(rng.uniform(0.05, 0.85), 3)
    incident: dict[str, Any] = {"endpoint": endpoint, "from": start, "to": round(start + rng.uniform(0.04, 0.12), 3)}
    kind = rng.choice(("5xx", "429", "slow", "slow_5xx"))
    if kind in ("5xx", "slow_5xx"):
        incident["rate_5xx"] = round(rng.uniform(0.3, 0.7), 2)
    if kind == "429":
        incident["rate_429"] = round(rng.uniform(0.3, 0.7), 2)
    if kind in ("slow", "slow_5xx"):
        median = rng.choice((1500, 2500, 4000))
        incident["ttft_ms"] = {"median": median, "p95": median * 3}
    return incident


def generate(seed: int, requests: int = 10_000) -> dict[str, Any]:
    """A fleet scenario drawn from ``seed``: class shares and sizes, incidents, quality per class all vary."""
    rng = random.Random(seed)
    simple = rng.uniform(0.62, 0.80)
    complex_ = rng.uniform(0.03, 0.10)
    shares = {"simple": simple, "moderate": 1 - simple - complex_, "complex": complex_}
    classes = {}
    for name, ((low_in, high_in), (low_out, high_out)) in _SIZES.items():
        classes[name] = {
            "share": round(shares[name], 3),
            "input_tokens": rng.randrange(low_in, high_in, 10),
            "output_tokens": rng.randrange(low_out, high_out, 5),
        }
    correct = {
        endpoint: {name: round(rng.uniform(*span), 3) for name, span in by_class.items()}
        for endpoint, by_class in _QUALITY.items()
    }
    endpoints = list(BASE["endpoints"])
    incidents = [_incident(rng, rng.choice(endpoints)) for _ in range(rng.randint(1, 3))]
    return {
        "seed": seed,
        "requests": requests,
        **copy.deepcopy(BASE),
        "incidents": incidents,
        # how many wrong answers the checks see is the pipeline's, not the traffic's: kept as in the shared scenario
        "workload": {"classes": classes, "correct": correct, "detectable": DETECTABLE},
    }
