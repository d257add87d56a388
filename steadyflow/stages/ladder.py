"""The degradation ladder: one loop over declared rungs that records every attempt.

Rungs are tried in order until one yields an output that validates. Model
rungs may fail in any way (the error is recorded, never raised); the rules
and default rungs are deterministic. A ladder with no default that runs out
quarantines the document: an explicit, recorded outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from steadyflow.audit.records import Attempt, Verdict
from steadyflow.providers.errors import TRANSIENT, ModelCallError
from steadyflow.providers.openai_compat import OpenAICompatClient
from steadyflow.spec.loader import CompiledStage
from steadyflow.spec.models import AiStage, DefaultRung, ModelRung, RulesRung
from steadyflow.stages.rules import RulesFailed, extract
from steadyflow.validators.base import Context
from steadyflow.validators.runner import CURRENT, CheckRun, StageChecks

MAX_RETRY_WAIT_S = 30.0


@dataclass
class LadderResult:
    """What the ladder produced for one document."""

    output: BaseModel | None
    status: str
    """'validated', 'rules', 'default' or 'quarantined'."""
    rung: int | None = None
    label: str | None = None
    model: str | None = None
    review: bool = False
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


def backoff_s(error: ModelCallError, retry: int) -> float:
    """Wait before a retry: the server's Retry-After if given (capped), else jittered exponential."""
    if error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_WAIT_S)
    return min(0.25 * 2**retry, 8.0) * (0.5 + random.random() / 2)


async def _model_rung(
    rung: ModelRung, index: int, messages: list[dict[str, str]], client: OpenAICompatClient, model: type[BaseModel]
) -> tuple[BaseModel | None, list[Attempt]]:
    attempts: list[Attempt] = []
    for retry in range(rung.retries + 1):
        try:
            output, made = await client.generate(messages, model, rung.reasks, index)
        except ModelCallError as exc:
            attempts += exc.attempts
            if exc.kind in TRANSIENT and retry < rung.retries:
                await asyncio.sleep(backoff_s(exc, retry))
                continue
            return None, attempts
        return output, attempts + made
    return None, attempts


def _rules_rung(index: int, stage: CompiledStage, text: str) -> tuple[BaseModel | None, Attempt]:
    started = time.perf_counter()
    attempt = Attempt(rung=index, kind="rules")
    try:
        output: BaseModel | None = extract(stage.rules[index], stage.output_model, text)
    except RulesFailed as exc:
        output, attempt.error_kind, attempt.error = None, "rules_failed", str(exc)
    attempt.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return output, attempt


def _default_rung(index: int, rung: DefaultRung, stage: CompiledStage) -> tuple[BaseModel | None, Attempt]:
    attempt = Attempt(rung=index, kind="default")
    try:
        return stage.output_model.model_validate(rung.default), attempt
    except ValidationError:  # checked at load time; kept so the ladder can never raise
        attempt.error_kind, attempt.error = "invalid_default", "default does not fit the output schema"
        return None, attempt


@dataclass
class Sandwich:
    """What the ladder needs besides the stage: the texts, the model clients and the checks."""

    text: str
    """The document's text, for the rules rung (it never leaves the process)."""
    messages: list[dict[str, str]]
    clients: Mapping[str, OpenAICompatClient]
    checks: StageChecks
    context: Context


async def walk(stage: CompiledStage, sandwich: Sandwich) -> LadderResult:
    """Try each rung of an AI stage's ladder in order; never raises for a model failure.

    Every output, the default's included, goes through the stage's checks: a
    failure escalates to the next rung, or quarantines the document, as its
    ``on_fail`` says. A default that fails a check quarantines the document, so
    no output ever leaves the declared rules.
    """
    spec = stage.spec
    if not isinstance(spec, AiStage):
        raise TypeError("walk() runs the ladder of an ai stage")
    attempts: list[Attempt] = []
    verdicts: list[Verdict] = []
    response_model = sandwich.checks.response_model(stage.output_model)
    for index, rung in enumerate(spec.ladder):
        output: BaseModel | None
        if isinstance(rung, ModelRung):
            run = CheckRun(sandwich.context, index)
            token = CURRENT.set(run)
            try:
                output, made = await _model_rung(rung, index, sandwich.messages, sandwich.clients[rung.model], response_model)
            finally:
                CURRENT.reset(token)
            attempts += made
            verdicts += run.verdicts
            label, status, model = f"model:{rung.model}", "validated", rung.model
        elif isinstance(rung, RulesRung):
            output, attempt = _rules_rung(index, stage, sandwich.text)
            attempts.append(attempt)
            label, status, model = "rules", "rules", None
        else:
            output, attempt = _default_rung(index, rung, stage)
            attempts.append(attempt)
            label, status, model = "default", "default", None
        if output is None:
            continue
        applied = sandwich.checks.apply(output, sandwich.context, index, stage.output_model)
        verdicts += applied.verdicts
        review = isinstance(rung, DefaultRung) and rung.review
        if applied.outcome == "accept":
            return LadderResult(applied.output, status, index, label, model, review, attempts=attempts, verdicts=verdicts)
        if applied.outcome == "quarantine" or isinstance(rung, DefaultRung):
            # nothing below the default: a default that breaks a rule is no answer at all
            return LadderResult(None, "quarantined", index, label, reason=applied.reason, attempts=attempts, verdicts=verdicts)
    return LadderResult(None, "quarantined", reason="every rung of the ladder failed", attempts=attempts, verdicts=verdicts)
