"""The degradation ladder: one loop over a stage's rungs that records every attempt.

Rungs (:mod:`steadyflow.stages.rungs`) are tried in order until one yields an output that
passes the stage's checks. Model rungs may fail in any way (the error is recorded, never
raised); the rules, plugin and default rungs are deterministic. Every stage kind is a ladder:
an ``ai`` stage its declared rungs, a ``rules`` stage [rules, default], a plugin stage
[its function, default]. A ladder with no default that runs out quarantines the document:
an explicit, recorded outcome.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from steadyflow.audit.records import Attempt, Verdict
from steadyflow.core.vocabulary import ErrorKind, Status
from steadyflow.spec.loader import CompiledStage
from steadyflow.spec.models import AiStage, DefaultRung, ModelRung, RulesRung, RulesStage
from steadyflow.spec.resilience import CacheRung
from steadyflow.stages.kinds import STAGE_KINDS
from steadyflow.stages.rungs import (
    CacheStep,
    DefaultStep,
    ModelStep,
    PluginStep,
    RulesStep,
    Rung,
    Sandwich,
    Trail,
    backoff_s,
    internal_reason,
)
from steadyflow.validators.runner import CheckCrashed

__all__ = ["Ladder", "LadderResult", "Sandwich", "backoff_s", "build_ladder", "internal_reason", "walk"]


@dataclass
class LadderResult:
    """What the ladder produced for one document."""

    output: BaseModel | None
    status: str
    """'validated', 'cached', 'rules', 'default' or 'quarantined'."""
    rung: int | None = None
    label: str | None = None
    model: str | None = None
    review: bool = False
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    route: dict[str, Any] | None = None
    confidence: dict[str, float] | None = None
    """The accepted model answer's confidence per enum or boolean field, when its endpoint gave one."""


@dataclass
class Ladder:
    """A stage's rungs, built once from its spec, and what to say when every one of them failed."""

    rungs: list[Rung]
    exhausted: str = "every rung of the ladder failed"


def build_ladder(stage: CompiledStage) -> Ladder:
    """The rungs of ``stage``: its ``ladder:`` (ai), or [rules | plugin function, default if given]."""
    spec, model = stage.spec, stage.output_model
    if isinstance(spec, AiStage):
        rungs = [_rung(i, r, stage) for i, r in enumerate(spec.ladder)]
        models = [r for r in rungs if isinstance(r, ModelStep)]
        for step, below in itertools.pairwise(models):
            step.next_model = below  # where a hedge of this rung goes
        return Ladder(rungs)
    if isinstance(spec, RulesStage):
        first: Rung = RulesStep(0, stage.rules[0], model)
        exhausted = "rules gave no valid output and there is no default"
    else:
        function = STAGE_KINDS.get(spec.kind)
        if function is None:  # check_pipeline reports it before any run; this keeps the message if it did not
            raise LookupError(STAGE_KINDS.unknown(spec.kind))
        first = PluginStep(0, spec.kind, function, spec.with_, model)
        exhausted = f"stage kind '{spec.kind}' gave no valid output and there is no default"
    rungs = [first] if spec.default is None else [first, DefaultStep(1, spec.default, spec.review, model)]
    return Ladder(rungs, exhausted)


def _rung(index: int, rung: Any, stage: CompiledStage) -> Rung:
    model = stage.output_model
    if isinstance(rung, ModelRung):
        return ModelStep(index, rung, model)
    if isinstance(rung, CacheRung):
        return CacheStep(index, rung, model)
    if isinstance(rung, RulesRung):
        return RulesStep(index, stage.rules[index], model)
    if isinstance(rung, DefaultRung):
        return DefaultStep(index, rung.default, rung.review, model)
    raise TypeError(f"unknown rung {type(rung).__name__}")


def _result(
    trail: Trail,
    output: BaseModel | None,
    status: str,
    index: int | None = None,
    label: str | None = None,
    model: str | None = None,
    review: bool = False,
    reason: str | None = None,
) -> LadderResult:
    return LadderResult(output, status, index, label, model, review, reason, trail.attempts, trail.verdicts)


async def walk(ladder: Ladder, sandwich: Sandwich) -> LadderResult:
    """Try each rung in order; never raises.

    Every output, the default's included, goes through the stage's checks: a
    failure escalates to the next rung, or quarantines the document, as its
    ``on_fail`` says. A default that fails a check quarantines the document, so
    no output ever leaves the declared rules. A check that raises, or any other
    bug or resource error on the way, quarantines the document with the error's
    type and where it happened, keeping the attempts (and their cost) made so far.
    """
    trail = Trail()
    quarantined = Status.QUARANTINED.value
    entry = sandwich.route.entry if sandwich.route else 0
    for rung in ladder.rungs:
        if rung.routable and rung.index < entry:
            continue  # routed past: this document starts lower on the ladder
        sandwich.context.confidence = None  # no model answer yet: a model rung sets what its endpoint said
        sandwich.answered = None  # a hedge that wins says so
        sandwich.parsed = None  # a model rung's call says which re-ask checks passed as instructor parsed
        try:
            output = await rung.attempt(sandwich, trail)
            if output is None:
                continue
            applied = await sandwich.checks.apply(
                output, sandwich.context, rung.index, rung.output_model, sandwich.parsed
            )
            trail.verdicts += applied.verdicts
            if applied.outcome == "accept" and applied.output is not None:
                rung.accepted(sandwich, applied.output)
        except CheckCrashed as crash:
            trail.verdicts.append(crash.verdict)
            return _result(trail, None, quarantined, rung.index, reason=crash.reason)
        except Exception as exc:  # a bug or a resource error for this document: quarantine it, the batch goes on
            return _result(trail, None, quarantined, rung.index, reason=internal_reason(rung.where, exc))
        if applied.outcome == "accept" and applied.output is not None:
            review = rung.review or applied.review
            index, label, model = sandwich.answered or (rung.index, rung.label, rung.model)
            result = _result(trail, applied.output, rung.status.value, index, label, model, review)
            result.confidence = sandwich.context.confidence or None
            return result
        if applied.outcome == "quarantine" or rung.final:
            # nothing below the default: a default that breaks a rule is no answer at all
            return _result(trail, None, quarantined, rung.index, rung.label, reason=applied.reason)
    overflow = [a.error for a in trail.attempts if a.error_kind == ErrorKind.CONTEXT_OVERFLOW.value]
    if overflow and len(overflow) == len(trail.attempts):  # no rung could even be asked: say why, not only that
        return _result(trail, None, quarantined, reason=overflow[-1])
    return _result(trail, None, quarantined, reason=ladder.exhausted)
