"""The rungs of a degradation ladder as small objects, built once per compiled stage.

Each rung has one method, :meth:`Rung.attempt`: try the rung for one document, put what it did
(attempts, verdicts) on the :class:`Trail`, and return an output for the stage's checks, or None.
Rungs hold only what their spec and the compiled stage say, never a document: one ladder serves
every document of a run at once. :func:`steadyflow.stages.ladder.walk` is the one loop over them.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from steadyflow.audit.records import Attempt, Verdict, error_type, validation_summary
from steadyflow.core.vocabulary import ErrorKind, RungKind, Status
from steadyflow.providers.confidence import TokenLogprobs, field_confidence, scored_fields
from steadyflow.providers.errors import TRANSIENT, ModelCallError
from steadyflow.providers.openai_compat import OpenAICompatClient
from steadyflow.providers.tokens import fit_for
from steadyflow.spec.models import ModelRung, RulesSpec
from steadyflow.spec.resilience import CacheRung
from steadyflow.stages.adaptive import HedgeBudget
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import CacheContext
from steadyflow.stages.hedge import hedged
from steadyflow.stages.routing import Route
from steadyflow.stages.rules import RulesFailed, extract
from steadyflow.stages.vote import VOTE_TEMPERATURE, majority
from steadyflow.validators.base import Context
from steadyflow.validators.runner import CHECK_RUN, CheckRun, StageChecks

MAX_RETRY_WAIT_S = 30.0

StageFunction = Callable[[dict[str, Any], str, Context], Any]
"""A ``@stage`` plugin: ``(params, text, context) -> dict | BaseModel`` (or an awaitable of one)."""


@dataclass
class Sandwich:
    """What the rungs need for one document besides the stage: its texts, the model clients and the checks."""

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
    """The prompt again around a shorter document text.

    It is how ``on_overflow: truncate`` cuts the document, not the instructions.
    """
    overflow: str = "quarantine"
    """The stage's ``input.on_overflow``: what a prompt too long for a model rung's context does."""
    hedge_after: Callable[[int, float], float | None] | None = None
    """(rung, quantile) -> the latency in ms this document's class observed there, for a hedge (None: not yet)."""
    hedges: Mapping[int, HedgeBudget] = field(default_factory=dict)
    """Each hedging rung's share of hedged calls, shared by every document of the stage."""
    answered: tuple[int, str, str | None] | None = None
    """(rung, label, model) when a hedge, not the rung itself, gave the output being checked."""
    parsed: CheckRun | None = None
    """The model call's re-ask checks, for the output being checked (see :attr:`CheckRun.passed`)."""


@dataclass
class Trail:
    """What the ladder has done so far for one document: kept whatever happens next."""

    attempts: list[Attempt] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


def internal_reason(where: str, exc: BaseException) -> str:
    """The reason recorded for a bug or a resource error while a document ran: where, and the type only.

    Never ``str(exc)``: an exception's text may quote the document (a ValidationError's
    ``input_value``, a KeyError's key, a parser's excerpt).
    """
    return f"internal error in {where}: {error_type(exc)}"


def backoff_s(error: ModelCallError, retry: int) -> float:
    """Wait before a retry: the server's Retry-After if given (capped), else jittered exponential."""
    if error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_WAIT_S)
    return min(0.25 * 2**retry, 8.0) * (0.5 + random.random() / 2)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class Rung:
    """One rung: where it sits, how its output is recorded, and how to try it."""

    status: Status = Status.VALIDATED
    final = False
    """Nothing below it: an output of this rung that fails a check quarantines the document (the default)."""
    routable = False
    """A route may make a document start below it (model rungs)."""

    def __init__(self, index: int, label: str, output_model: type[BaseModel], model: str | None = None) -> None:
        self.index, self.label, self.output_model, self.model = index, label, output_model, model
        self.review = False

    @property
    def where(self) -> str:
        """The rung in an internal-error reason: 'ladder rung 2 (rules)'."""
        return f"ladder rung {self.index} ({self.label.replace(':', ' ')})"

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """Try this rung for one document: its attempts and verdicts go on ``trail``; an output, or None."""
        raise NotImplementedError

    def accepted(self, sandwich: Sandwich, output: BaseModel) -> None:
        """Called once the stage's checks accepted this rung's ``output`` (a model rung fills the cache)."""


class ModelStep(Rung):
    """Call a model (re-asks inside the call, retries of transient errors here), fitted to its context."""

    routable = True

    def __init__(self, index: int, spec: ModelRung, output_model: type[BaseModel]) -> None:
        super().__init__(index, f"{RungKind.MODEL.value}:{spec.model}", output_model, spec.model)
        self.spec = spec
        self.next_model: ModelStep | None = None
        """The ladder's next model rung: where a hedge of this rung goes (set by build_ladder)."""
        self.confident_fields = scored_fields(output_model.model_json_schema())
        """Fields a confidence is computed for (enums and booleans), when the endpoint gives log-probabilities."""

    def _late(self, sandwich: Sandwich) -> Attempt | None:
        """An attempt recording that the document's deadline passed before this call, or None to call it."""
        left = _remaining(sandwich.deadline)
        if left is None or left > 0:
            return None
        return Attempt(
            rung=self.index,
            kind=RungKind.MODEL.value,
            model=self.spec.model,
            error_kind=ErrorKind.DEADLINE.value,
            error="document deadline passed",
        )

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """Call the model with the prompt fitted to its context, unless the deadline passed; an output, or None."""
        late = self._late(sandwich)
        if late is not None:
            trail.attempts.append(late)
            return None
        response_model = sandwich.checks.response_model(self.output_model)
        messages = await self._fit(sandwich, response_model, trail)
        if messages is None:  # does not fit this model's context: not sent, the ladder goes on
            return None
        run = CheckRun(sandwich.context, self.index)  # the re-ask checks' document, passed with the call
        client = sandwich.clients[self.spec.model]
        if self.spec.vote:
            output = await self._vote(sandwich, response_model, messages, run, trail)
        elif self.spec.hedge is not None and self.next_model is not None:
            output = await hedged(self, sandwich, response_model, messages, run, trail)
        else:
            tokens: TokenLogprobs | None = [] if sandwich.checks.wants_confidence or client.spec.logprobs else None
            output = await self._call(sandwich, response_model, messages, run, trail, tokens)
            if output is not None and tokens is not None:
                data = output.model_dump(mode="json")
                sandwich.context.confidence = field_confidence(tokens, data, self.confident_fields)
        trail.verdicts += run.verdicts
        sandwich.parsed = run
        if run.crashed is not None:  # a check raised while instructor parsed: the call is paid for, recorded
            raise run.crashed
        return output

    def _hedge_delay_s(self, sandwich: Sandwich) -> float | None:
        """How long the rung's call may take before a hedge goes out (None: no hedge for this document)."""
        spec = self.spec.hedge
        if spec is None:
            return None
        if spec.after_ms is not None:
            return spec.after_ms / 1000
        observed = sandwich.hedge_after(self.index, spec.quantile) if sandwich.hedge_after is not None else None
        return observed / 1000 if observed is not None else None

    async def _fit(
        self, sandwich: Sandwich, response_model: type[BaseModel], trail: Trail
    ) -> list[dict[str, str]] | None:
        """The messages as rendered, cut to fit this model's context, or None (recorded, not sent).

        Each model has its own context, so each rung is fitted on its own; no context declared, no check.
        """
        spec = sandwich.clients[self.spec.model].spec
        render = sandwich.render if sandwich.overflow == "truncate" else None
        fit = await fit_for(spec, response_model, sandwich.messages, sandwich.text, render)
        if fit is None or fit.messages is sandwich.messages:
            return sandwich.messages
        if fit.messages is None:
            kind = ErrorKind.CONTEXT_OVERFLOW.value
            trail.attempts.append(
                Attempt(
                    rung=self.index, kind=RungKind.MODEL.value, model=self.spec.model, error_kind=kind, error=fit.reason
                )
            )
            return None
        note = (
            f"document truncated to {fit.truncated_to} tokens to fit the context of {self.spec.model} "
            f"({fit.tokens} + {fit.max_tokens} <= {fit.context})"
        )
        trail.verdicts.append(
            Verdict(check="context", layer="input", passed=False, action="truncate", message=note, rung=self.index)
        )
        return fit.messages

    async def _call(
        self,
        sandwich: Sandwich,
        response_model: type[BaseModel],
        messages: list[dict[str, str]],
        run: CheckRun,
        trail: Trail,
        tokens: TokenLogprobs | None = None,
        temperature: float | None = None,
    ) -> BaseModel | None:
        """The model call, retried on transient errors within the deadline; every attempt goes on ``trail``."""
        client = sandwich.clients[self.spec.model]
        budget = sandwich.budget
        gate = partial(budget.gate, client.spec.price) if budget is not None else None
        waited: tuple[float, str] | None = None
        for retry in range(self.spec.retries + 1):
            left = _remaining(sandwich.deadline)
            if left is not None and left <= 0:
                trail.attempts.append(self._late(sandwich) or Attempt(rung=self.index, kind=RungKind.MODEL.value))
                return None
            try:
                output, made = await client.generate(
                    messages,
                    response_model,
                    self.spec.reasks,
                    self.index,
                    timeout_s=left,
                    gate=gate,
                    validation_context={CHECK_RUN: run},
                    logprobs=tokens,
                    temperature=temperature,
                )
            except ModelCallError as exc:
                _note_wait(exc.attempts, waited)
                trail.attempts += exc.attempts
                if budget is not None:
                    budget.charge(exc.attempts)
                if exc.kind == ErrorKind.BUDGET:
                    return None
                wait = backoff_s(exc, retry)
                left = _remaining(sandwich.deadline)
                if exc.kind in TRANSIENT and retry < self.spec.retries and (left is None or wait < left):
                    await asyncio.sleep(wait)
                    waited = (wait * 1000, "retry_after" if exc.retry_after is not None else "backoff")
                    continue
                return None
            if budget is not None:
                budget.charge(made)
            _note_wait(made, waited)
            trail.attempts += made
            return output
        return None

    async def _vote(
        self,
        sandwich: Sandwich,
        response_model: type[BaseModel],
        messages: list[dict[str, str]],
        run: CheckRun,
        trail: Trail,
    ) -> BaseModel | None:
        """Ask ``vote`` times, one after another; keep the majority answer, its agreement as the confidence."""
        asked = self.spec.vote or 1
        spec_temperature = sandwich.clients[self.spec.model].spec.temperature
        temperature = spec_temperature if spec_temperature > 0 else VOTE_TEMPERATURE
        answers = []
        for _ in range(asked):
            output = await self._call(sandwich, response_model, messages, run, trail, temperature=temperature)
            if output is not None:
                answers.append(output)
        if not answers:
            return None
        best, confidence = majority([a.model_dump(mode="json") for a in answers], self.confident_fields, asked)
        sandwich.context.confidence = confidence
        return answers[best]

    def accepted(self, sandwich: Sandwich, output: BaseModel) -> None:
        """Store the accepted ``output`` in the run's cache, if it has one, under this rung's model."""
        if sandwich.cache is not None:
            sandwich.cache.store(sandwich.clients[self.spec.model], output)


def _note_wait(attempts: list[Attempt], waited: tuple[float, str] | None) -> None:
    """Put the ladder's wait before a retry on the retry's first attempt."""
    if waited is not None and attempts:
        attempts[0].waited_ms = round(attempts[0].waited_ms + waited[0], 2)
        attempts[0].wait_reason = attempts[0].wait_reason or waited[1]


class CacheStep(Rung):
    """An earlier accepted output for the same (or a similar) input; a candidate the checks still judge."""

    status = Status.CACHED

    def __init__(self, index: int, spec: CacheRung, output_model: type[BaseModel]) -> None:
        super().__init__(index, f"{RungKind.CACHE.value}:{spec.cache}", output_model)
        self.spec = spec

    @property
    def where(self) -> str:
        """The rung in an internal-error reason: 'ladder rung 2 (cache)'."""
        return f"ladder rung {self.index} (cache)"

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """Look up an earlier output in the run's cache (nothing, and nothing recorded, if the run has none)."""
        if sandwich.cache is None:  # the run has no cache: nothing to look up, nothing to record
            return None
        output, attempt = sandwich.cache.lookup(self.spec, self.index, self.output_model)
        trail.attempts.append(attempt)
        return output


class RulesStep(Rung):
    """The rules extractor; a failure is a recorded attempt and the ladder goes on (to its default)."""

    status = Status.RULES

    def __init__(self, index: int, rules: RulesSpec, output_model: type[BaseModel]) -> None:
        super().__init__(index, RungKind.RULES.value, output_model)
        self.rules = rules

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """Run the rules extractor on the document's text; a failure is the recorded attempt's error."""
        started = time.perf_counter()
        attempt = Attempt(rung=self.index, kind=RungKind.RULES.value)
        output: BaseModel | None = None
        try:
            output = extract(self.rules, self.output_model, sandwich.text)
        except RulesFailed as exc:
            attempt.error_kind, attempt.error = ErrorKind.RULES_FAILED.value, str(exc)  # built from field names only
        except Exception as exc:  # a pattern that trips on a hostile text must still leave the default its turn
            attempt.error_kind, attempt.error = ErrorKind.RULES_ERROR.value, internal_reason("rules", exc)
        attempt.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        trail.attempts.append(attempt)
        return output


class DefaultStep(Rung):
    """The safe default, flagged for review if the stage says so; the last rung: never raises."""

    status = Status.DEFAULT
    final = True

    def __init__(self, index: int, value: dict[str, Any], review: bool, output_model: type[BaseModel]) -> None:
        super().__init__(index, RungKind.DEFAULT.value, output_model)
        self.value, self.review = value, review

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """The stage's default value as an output; None, with the reason recorded, if it does not fit the schema."""
        attempt = Attempt(rung=self.index, kind=RungKind.DEFAULT.value)
        trail.attempts.append(attempt)
        try:  # checked at load time; this keeps the ladder's promise anyway
            return self.output_model.model_validate(self.value)
        except ValidationError as exc:
            message = f"default does not fit the output schema: {validation_summary(exc)}"
            attempt.error_kind, attempt.error = ErrorKind.INVALID_DEFAULT.value, message
        except Exception as exc:
            attempt.error_kind, attempt.error = ErrorKind.INVALID_DEFAULT.value, internal_reason("default", exc)
        return None


class PluginStep(Rung):
    """A ``@stage`` plugin's function; what it raises or returns that does not fit is a recorded attempt."""

    def __init__(
        self, index: int, kind: str, function: StageFunction, params: dict[str, Any], output_model: type[BaseModel]
    ) -> None:
        super().__init__(index, kind, output_model)
        self.function, self.params = function, params

    @property
    def where(self) -> str:
        """The rung in an internal-error reason: "stage kind 'NAME'"."""
        return f"stage kind '{self.label}'"

    async def attempt(self, sandwich: Sandwich, trail: Trail) -> BaseModel | None:
        """Call the plugin on the document's text; what it raises or returns that does not fit is recorded."""
        started = time.perf_counter()
        attempt = Attempt(rung=self.index, kind=self.label)
        output: BaseModel | None = None
        try:
            value = self.function(
                dict(self.params), sandwich.text, sandwich.context
            )  # a copy: plugins cannot edit the spec
            if inspect.isawaitable(value):
                value = await value
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            output = self.output_model.model_validate(value)
        except ValidationError as exc:
            message = f"{self.label} gave no valid output: {validation_summary(exc)}"
            attempt.error_kind, attempt.error = ErrorKind.INVALID_OUTPUT.value, message
        except Exception as exc:  # the plugin's bug, or a hostile document's: the default still gets its turn
            attempt.error_kind, attempt.error = ErrorKind.UNKNOWN.value, internal_reason(self.where, exc)
        attempt.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        trail.attempts.append(attempt)
        return output
