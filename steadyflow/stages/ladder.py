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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from steadyflow.audit.records import Attempt, Verdict, error_type, validation_summary
from steadyflow.core.vocabulary import ErrorKind
from steadyflow.providers.errors import TRANSIENT, ModelCallError
from steadyflow.providers.openai_compat import OpenAICompatClient
from steadyflow.providers.tokens import fit_for
from steadyflow.spec.loader import CompiledStage
from steadyflow.spec.models import AiStage, DefaultRung, ModelRung, RulesRung, Rung
from steadyflow.spec.resilience import CacheRung
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import CacheContext
from steadyflow.stages.routing import Route
from steadyflow.stages.rules import RulesFailed, extract
from steadyflow.validators.base import Context
from steadyflow.validators.runner import CURRENT, CheckCrashed, CheckRun, StageChecks

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
    route: dict[str, Any] | None = None


def backoff_s(error: ModelCallError, retry: int) -> float:
    """Wait before a retry: the server's Retry-After if given (capped), else jittered exponential."""
    if error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_WAIT_S)
    return min(0.25 * 2**retry, 8.0) * (0.5 + random.random() / 2)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


async def _model_rung(
    rung: ModelRung,
    index: int,
    sandwich: Sandwich,
    model: type[BaseModel],
    messages: list[dict[str, str]] | None = None,
) -> tuple[BaseModel | None, list[Attempt]]:
    attempts: list[Attempt] = []
    client = sandwich.clients[rung.model]
    budget = sandwich.budget
    gate = partial(budget.gate, client.spec.price) if budget is not None else None
    waited: tuple[float, str] | None = None
    for retry in range(rung.retries + 1):
        left = _remaining(sandwich.deadline)
        if left is not None and left <= 0:
            late = Attempt(
                rung=index,
                kind="model",
                model=rung.model,
                error_kind=ErrorKind.DEADLINE.value,
                error="document deadline passed",
            )
            attempts.append(late)
            return None, attempts
        try:
            output, made = await client.generate(
                messages or sandwich.messages, model, rung.reasks, index, timeout_s=left, gate=gate
            )
        except ModelCallError as exc:
            _note_wait(exc.attempts, waited)
            attempts += exc.attempts
            if budget is not None:
                budget.charge(exc.attempts)
            if exc.kind == ErrorKind.BUDGET:
                return None, attempts
            wait = backoff_s(exc, retry)
            left = _remaining(sandwich.deadline)
            if exc.kind in TRANSIENT and retry < rung.retries and (left is None or wait < left):
                await asyncio.sleep(wait)
                waited = (wait * 1000, "retry_after" if exc.retry_after is not None else "backoff")
                continue
            return None, attempts
        if budget is not None:
            budget.charge(made)
        _note_wait(made, waited)
        return output, attempts + made
    return None, attempts


def _note_wait(attempts: list[Attempt], waited: tuple[float, str] | None) -> None:
    """Put the ladder's wait before a retry on the retry's first attempt."""
    if waited is not None and attempts:
        attempts[0].waited_ms = round(attempts[0].waited_ms + waited[0], 2)
        attempts[0].wait_reason = attempts[0].wait_reason or waited[1]


def _skip(rung: ModelRung, index: int, sandwich: Sandwich) -> Attempt | None:
    """An attempt that records why a model rung is not called (its deadline passed), or None to call it."""
    left = _remaining(sandwich.deadline)
    if left is None or left > 0:
        return None
    return Attempt(
        rung=index,
        kind="model",
        model=rung.model,
        error_kind=ErrorKind.DEADLINE.value,
        error="document deadline passed",
    )


async def _fit(
    rung: ModelRung, index: int, sandwich: Sandwich, response_model: type[BaseModel], trail: _Trail
) -> list[dict[str, str]] | None:
    """The messages for this model rung, counted against its context: as rendered, cut to fit, or None (recorded, not sent).

    Each model has its own context, so each rung is fitted on its own; no context declared, no check.
    """
    spec = sandwich.clients[rung.model].spec
    render = sandwich.render if sandwich.overflow == "truncate" else None
    fit = await fit_for(spec, response_model, sandwich.messages, sandwich.text, render)
    if fit is None or fit.messages is sandwich.messages:
        return sandwich.messages
    if fit.messages is None:
        kind = ErrorKind.CONTEXT_OVERFLOW.value
        trail.attempts.append(Attempt(rung=index, kind="model", model=rung.model, error_kind=kind, error=fit.reason))
        return None
    note = f"document truncated to {fit.truncated_to} tokens to fit the context of {rung.model} ({fit.tokens} + {fit.max_tokens} <= {fit.context})"
    trail.verdicts.append(
        Verdict(check="context", layer="input", passed=False, action="truncate", message=note, rung=index)
    )
    return fit.messages


def internal_reason(where: str, exc: BaseException) -> str:
    """The reason recorded for a bug or a resource error while a document ran: where, and the type only.

    Never ``str(exc)``: an exception's text may quote the document (a ValidationError's
    ``input_value``, a KeyError's key, a parser's excerpt).
    """
    return f"internal error in {where}: {error_type(exc)}"


def _rules_rung(index: int, stage: CompiledStage, text: str) -> tuple[BaseModel | None, Attempt]:
    """The rules rung; never raises: a failure is a recorded attempt and the ladder goes on to its default."""
    started = time.perf_counter()
    attempt = Attempt(rung=index, kind="rules")
    output: BaseModel | None = None
    try:
        output = extract(stage.rules[index], stage.output_model, text)
    except RulesFailed as exc:
        attempt.error_kind, attempt.error = "rules_failed", str(exc)  # built from field names only
    except Exception as exc:  # a pattern that trips on a hostile text must still leave the default its turn
        attempt.error_kind, attempt.error = "rules_error", internal_reason("rules", exc)
    attempt.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return output, attempt


def _default_rung(index: int, rung: DefaultRung, stage: CompiledStage) -> tuple[BaseModel | None, Attempt]:
    """The safe default; never raises (it was checked at load time, this keeps the ladder's promise anyway)."""
    attempt = Attempt(rung=index, kind="default")
    try:
        return stage.output_model.model_validate(rung.default), attempt
    except ValidationError as exc:
        attempt.error_kind, attempt.error = (
            "invalid_default",
            f"default does not fit the output schema: {validation_summary(exc)}",
        )
    except Exception as exc:
        attempt.error_kind, attempt.error = "invalid_default", internal_reason("default", exc)
    return None, attempt


@dataclass
class Sandwich:
    """What the ladder needs besides the stage: the texts, the model clients and the checks."""

    text: str
    """The text the rules rung reads: the one the model saw (redacted, if the stage redacts), so that
    the rules cannot copy into an output what the model was never shown; placeholders are restored
    afterwards, for the ``restore_pii`` fields only, as for model outputs."""
    messages: list[dict[str, str]]
    clients: Mapping[str, OpenAICompatClient]
    checks: StageChecks
    context: Context
    budget: Budget | None = None
    deadline: float | None = None
    """time.monotonic() after which model rungs are skipped."""
    cache: CacheContext | None = None
    route: Route | None = None
    render: Callable[[str], list[dict[str, str]]] | None = None
    """The prompt again around a shorter document text: how ``on_overflow: truncate`` cuts the document, not the instructions."""
    overflow: str = "quarantine"
    """The stage's ``input.on_overflow``: what a prompt too long for a model rung's context does."""


@dataclass
class _Trail:
    """What the ladder has done so far for one document: kept whatever happens next."""

    attempts: list[Attempt] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def result(
        self,
        output: BaseModel | None,
        status: str,
        index: int | None = None,
        label: str | None = None,
        model: str | None = None,
        review: bool = False,
        reason: str | None = None,
    ) -> LadderResult:
        return LadderResult(output, status, index, label, model, review, reason, self.attempts, self.verdicts)


async def _try_rung(
    rung: Rung, index: int, stage: CompiledStage, sandwich: Sandwich, response_model: type[BaseModel], trail: _Trail
) -> tuple[BaseModel | None, str, str, str | None]:
    """Run one rung: (output or None, label, status, model). Its attempts and verdicts go on ``trail``."""
    if isinstance(rung, ModelRung):
        skipped = _skip(rung, index, sandwich)
        if skipped is not None:
            trail.attempts.append(skipped)
            return None, f"model:{rung.model}", "validated", rung.model
        messages = await _fit(rung, index, sandwich, response_model, trail)
        if messages is None:  # does not fit this model's context: not sent, the ladder goes on
            return None, f"model:{rung.model}", "validated", rung.model
        run = CheckRun(sandwich.context, index)
        token = CURRENT.set(run)
        try:
            output, made = await _model_rung(rung, index, sandwich, response_model, messages)
        finally:
            CURRENT.reset(token)
        trail.attempts += made
        trail.verdicts += run.verdicts
        if run.crashed is not None:  # a check raised while instructor parsed: the call is paid for, recorded above
            raise run.crashed
        return output, f"model:{rung.model}", "validated", rung.model
    if isinstance(rung, CacheRung):
        if sandwich.cache is None:
            return None, f"cache:{rung.cache}", "cached", None
        output, attempt = sandwich.cache.lookup(rung, index, stage.output_model)
        trail.attempts.append(attempt)
        return output, f"cache:{rung.cache}", "cached", None
    if isinstance(rung, RulesRung):
        output, attempt = _rules_rung(index, stage, sandwich.text)
        trail.attempts.append(attempt)
        return output, "rules", "rules", None
    output, attempt = _default_rung(index, rung, stage)
    trail.attempts.append(attempt)
    return output, "default", "default", None


async def walk(stage: CompiledStage, sandwich: Sandwich) -> LadderResult:
    """Try each rung of an AI stage's ladder in order; never raises.

    Every output, the default's included, goes through the stage's checks: a
    failure escalates to the next rung, or quarantines the document, as its
    ``on_fail`` says. A default that fails a check quarantines the document, so
    no output ever leaves the declared rules. A check that raises, or any other
    bug or resource error on the way, quarantines the document with the error's
    type and where it happened, keeping the attempts (and their cost) made so far.
    """
    spec = stage.spec
    if not isinstance(spec, AiStage):
        raise TypeError("walk() runs the ladder of an ai stage")
    trail = _Trail()
    entry = sandwich.route.entry if sandwich.route else 0
    for index, rung in enumerate(spec.ladder):
        if isinstance(rung, ModelRung) and index < entry:
            continue  # routed past: this document starts lower on the ladder
        where = f"ladder rung {index} ({_kind(rung)})"
        try:
            response_model = sandwich.checks.response_model(stage.output_model)
            output, label, status, model = await _try_rung(rung, index, stage, sandwich, response_model, trail)
            if output is None:
                continue
            applied = sandwich.checks.apply(output, sandwich.context, index, stage.output_model)
            trail.verdicts += applied.verdicts
            if (
                applied.outcome == "accept"
                and applied.output is not None
                and isinstance(rung, ModelRung)
                and sandwich.cache is not None
            ):
                sandwich.cache.store(sandwich.clients[rung.model], applied.output)
        except CheckCrashed as crash:
            trail.verdicts.append(crash.verdict)
            return trail.result(None, "quarantined", index, reason=crash.reason)
        except Exception as exc:  # a bug or a resource error for this document: quarantine it, the batch goes on
            return trail.result(None, "quarantined", index, reason=internal_reason(where, exc))
        if applied.outcome == "accept" and applied.output is not None:
            return trail.result(
                applied.output, status, index, label, model, isinstance(rung, DefaultRung) and rung.review
            )
        if applied.outcome == "quarantine" or isinstance(rung, DefaultRung):
            # nothing below the default: a default that breaks a rule is no answer at all
            return trail.result(None, "quarantined", index, label, reason=applied.reason)
    overflow = [a.error for a in trail.attempts if a.error_kind == ErrorKind.CONTEXT_OVERFLOW.value]
    if overflow and len(overflow) == len(trail.attempts):  # no rung could even be asked: say why, not only that
        return trail.result(None, "quarantined", reason=overflow[-1])
    return trail.result(None, "quarantined", reason="every rung of the ladder failed")


def _kind(rung: Rung) -> str:
    if isinstance(rung, ModelRung):
        return f"model {rung.model}"
    if isinstance(rung, CacheRung):
        return "cache"
    return "rules" if isinstance(rung, RulesRung) else "default"
