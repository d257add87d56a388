"""Cost-aware routing: where a document enters its stage's ladder.

An estimator scores a document's complexity in [0, 1] from the document alone
(never from anything a benchmark or a label knows). The stage's ``route``
thresholds turn the score into a class, and ``enter`` names the model rung
where that class starts: simple work goes to cheap rungs first, and the rungs
below still catch what they get wrong. Estimators register by name with
``@estimator("name")`` or through the ``steadyflow.estimators`` entry-point group
of an installed package; the built-in one is ``heuristic``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steadyflow.core.registry import Registry
from steadyflow.spec.errors import Problem
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import AiStage, ModelRung
from steadyflow.spec.resilience import RouteSpec

Estimator = Callable[[str], float]
ESTIMATORS: Registry[Estimator] = Registry("estimator", "steadyflow.estimators")
"""Complexity estimators by name.

``heuristic`` is built in, packages add theirs as ``steadyflow.estimators`` entry points.
"""

_REASONING = re.compile(
    r"\b(why|explain|compare|analy[sz]e|reconcile|calculate|discrepan\w*|contract|clause|liabilit\w*|"
    r"regulat\w*|escalat\w*|legal|dispute|multiple|several|however|although|whereas)\b",
    re.IGNORECASE,
)


def estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Register ``function(text) -> score in [0, 1]`` as a complexity estimator."""
    return ESTIMATORS.register(name)


def estimators() -> dict[str, Estimator]:
    """Every registered estimator by name."""
    return {name: function for name in ESTIMATORS.names() if (function := ESTIMATORS.get(name)) is not None}


def heuristic(text: str) -> float:
    """Length, structure and reasoning cues, each saturating, blended into one score.

    - length: ~4 characters a token; 250 tokens scores ~0.2, 1,000 ~0.55, 3,000+ ~0.9;
    - structure: lines, list items, tables and numbers (documents with many parts);
    - content: words that ask for reasoning rather than lookup (explain, compare, reconcile...).
    """
    tokens = len(text) / 4
    length = 1 - math.exp(-tokens / 1200)
    lines = text.count("\n")
    items = len(re.findall(r"^\s*([-*•]|\d+[.)])\s", text, re.MULTILINE)) + text.count("|") / 4
    numbers = len(re.findall(r"\d+(?:[.,]\d+)?", text))
    structure = 1 - math.exp(-(lines / 60 + items / 25 + numbers / 80))
    cues = len(_REASONING.findall(text))
    content = 1 - math.exp(-cues / 6)
    return round(min(1.0, 0.75 * length + 0.15 * structure + 0.10 * content), 4)


ESTIMATORS.add("heuristic", heuristic, builtin=True)


@dataclass(frozen=True)
class Route:
    """A routing decision, as the decision record keeps it."""

    estimator: str
    score: float
    complexity: str
    entry: int
    """Index of the ladder rung where the document starts."""
    adaptive: dict[str, Any] | None = None
    """With adaptive routing: why this entry, and the estimates per model that chose it."""


def classify(score: float, thresholds: dict[str, float]) -> str:
    """The class of a score: the highest class whose threshold it reaches, else 'simple'."""
    reached = [(limit, name) for name, limit in thresholds.items() if score >= limit]
    return max(reached)[1] if reached else "simple"


def by_price(complexity: str, spec: RouteSpec, stage: AiStage, prices: dict[str, float]) -> int:
    """The rung a class enters at when ``enter`` does not say: cheaper models for simpler classes."""
    rungs = sorted((prices.get(r.model, 0.0), i) for i, r in enumerate(stage.ladder) if isinstance(r, ModelRung))
    if not rungs:
        return 0
    classes = ["simple", *sorted(spec.thresholds, key=spec.thresholds.__getitem__)]
    rank = classes.index(complexity) if complexity in classes else 0
    position = round(rank * (len(rungs) - 1) / max(1, len(classes) - 1))
    return rungs[position][1]


def route(spec: RouteSpec, stage: AiStage, text: str, prices: dict[str, float] | None = None) -> Route:
    """Score ``text`` and pick the rung where it enters ``stage``'s ladder.

    ``prices`` (model name -> USD per million input plus output tokens) decide the entry of
    a class that ``enter`` does not name.
    """
    function = ESTIMATORS.get(spec.estimator)
    if function is None:
        raise ValueError(ESTIMATORS.unknown(spec.estimator))
    score = function(text)
    complexity = classify(score, spec.thresholds)
    model = spec.enter.get(complexity)
    if model is None:
        return Route(spec.estimator, score, complexity, by_price(complexity, spec, stage, prices or {}))
    entry = next((i for i, r in enumerate(stage.ladder) if isinstance(r, ModelRung) and r.model == model), 0)
    return Route(spec.estimator, score, complexity, entry)


def route_problems(pipeline: LoadedPipeline) -> list[Problem]:
    """Unknown estimators of every stage's ``route`` (classes and entry models are checked when the file loads)."""
    problems = []
    for i, stage in enumerate(pipeline.spec.stages):
        if not isinstance(stage, AiStage) or stage.route is None:
            continue
        at = ("stages", i, "route")
        if stage.route.estimator not in ESTIMATORS:
            message = ESTIMATORS.unknown(stage.route.estimator)
            problems.append(pipeline.positions.problem((*at, "estimator"), message))
    return problems
