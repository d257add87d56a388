"""Structured generation over any OpenAI-compatible endpoint: openai SDK + instructor.

Retry ownership: the SDK's own retries are off (``max_retries=0``); instructor
owns *re-asks* (invalid output fed back to the model, bounded by the rung's
``reasks``); the ladder owns *retries* of transient transport errors. Nothing
else retries, so attempts never multiply.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
import instructor
import openai
from instructor.core.hooks import Hooks
from pydantic import BaseModel

from steadyflow.audit.records import Attempt
from steadyflow.core.vocabulary import ErrorKind
from steadyflow.providers.breaker import CircuitBreaker
from steadyflow.providers.confidence import TokenLogprobs, response_tokens
from steadyflow.providers.errors import ModelCallError, classify, validation_summary
from steadyflow.providers.local_server import server_count
from steadyflow.spec.models import ModelSpec

# instructor logs every failed call at ERROR with the server's message; our decision records
# carry the same facts without response text, so its logger stays quiet.
logging.getLogger("instructor").setLevel(logging.CRITICAL)

_MODES = {"tools": instructor.Mode.TOOLS, "json_schema": instructor.Mode.JSON_SCHEMA, "json": instructor.Mode.JSON}


_PREPARED: dict[type[BaseModel], type[BaseModel]] = {}
#: Time on the wire of the current task's last HTTP exchange: request sent -> response headers in.
_WIRE_MS: ContextVar[float | None] = ContextVar("steadyflow_wire_ms", default=None)
#: The provider's own processing time for that exchange, when it says (OpenAI's openai-processing-ms header).
_SERVER_MS: ContextVar[float | None] = ContextVar("steadyflow_server_ms", default=None)


async def _sent(request: httpx.Request) -> None:
    request.extensions["steadyflow_sent"] = time.perf_counter()


async def _received(response: httpx.Response) -> None:
    sent = response.request.extensions.get("steadyflow_sent")
    if sent is not None:
        _WIRE_MS.set((time.perf_counter() - sent) * 1000)
    try:
        _SERVER_MS.set(float(response.headers["openai-processing-ms"]))
    except (KeyError, ValueError):
        _SERVER_MS.set(None)


def _once_per_model(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """Instructor's async-validator check, remembered per class that passed it.

    instructor 1.17 walks the response model's whole MRO (every attribute of ``BaseModel``) twice per
    call to refuse async validators: a tenth of the event loop's time in a throughput run. A class
    cannot gain such a validator once built, so a class that passed passes again; one that fails
    is never remembered and raises every time, as before.
    """
    passed: weakref.WeakSet[type] = weakref.WeakSet()

    @functools.wraps(check)
    def wrapper(response_model: Any) -> None:
        if isinstance(response_model, type) and response_model in passed:
            return
        check(response_model)
        if isinstance(response_model, type):
            passed.add(response_model)

    return wrapper


def _remember_async_validator_checks() -> None:
    """Install :func:`_once_per_model` where instructor looks the check up (its module, and patch.py's import)."""
    from instructor.v2.core import patch
    from instructor.v2.validation import async_validators

    if not hasattr(async_validators.reject_async_validators, "__wrapped__"):
        once = _once_per_model(async_validators.reject_async_validators)
        async_validators.reject_async_validators = once  # type: ignore[assignment]
        patch.reject_async_validators = once  # type: ignore[assignment]


_remember_async_validator_checks()


def prepared(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` wrapped the way instructor wraps it, once: instructor would build a new class on every call."""
    if model not in _PREPARED:
        from instructor.v2.core.function_calls import response_schema

        _PREPARED[model] = response_schema(model)
    return _PREPARED[model]


class _Unrendered(dict[str, Any]):
    """A validation context that instructor will not use as a template context.

    instructor 1.17 has one ``context=`` for two things: pydantic's validation context, and the
    variables its Jinja templating renders every message with (``handle_templating`` in
    ``instructor/v2/core/templating.py`` returns the messages untouched only when ``not context``).
    Rendering would run a document's ``{{ ... }}``/``{% ... %}`` and dedent and trim its text, so
    this dict says it is empty (falsy) while holding its items: instructor skips the templating,
    and pydantic still hands this very object to the validators as ``ValidationInfo.context``.
    """

    def __bool__(self) -> bool:
        return False


_PROVIDER_WORD = re.compile(r"[\w.:/@+-]{1,200}")


def _provider_word(value: Any) -> str | None:
    """A model name or fingerprint as the provider returned it, when it is one plain word of at most 200 characters.

    It goes into records: an endpoint's answer is not trusted to be short, printable or free of other text.
    """
    if isinstance(value, str) and _PROVIDER_WORD.fullmatch(value):
        return value
    return None if value in (None, "") else "(unreadable)"


def cost_usd(spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
    """List-price cost of one call."""
    return (tokens_in * spec.price.input_per_mtok + tokens_out * spec.price.output_per_mtok) / 1_000_000


@dataclass
class _CallLog:
    """Collects one attempt per HTTP call that instructor makes (first answer and re-asks)."""

    name: str
    spec: ModelSpec
    rung: int
    breaker: CircuitBreaker
    attempts: list[Attempt] = field(default_factory=list)
    started: float = 0.0
    started_at: float = 0.0
    """The Unix time ``started`` was read at (a wall time worked out at the answer could be a GIL switch late)."""
    waited_ms: float = 0.0
    wait_reason: str | None = None
    tokens: TokenLogprobs | None = None
    """The last answer's token log-probabilities, when they were asked for and given."""

    def hooks(self) -> Hooks:
        hooks = Hooks()
        hooks.on("completion:kwargs", self._on_kwargs)
        hooks.on("completion:response", self._on_response)
        hooks.on("completion:error", self._on_error)
        hooks.on("parse:error", self._on_parse_error)
        return hooks

    def _on_kwargs(self, *args: Any, **kwargs: Any) -> None:
        self.started, self.started_at = time.perf_counter(), time.time()
        _WIRE_MS.set(None)
        _SERVER_MS.set(None)

    def new_attempt(self) -> Attempt:
        attempt = Attempt(rung=self.rung, kind="model", model=self.name)
        # the wire time when there was a response; else (timeout, reset) all the time the call took
        wire = _WIRE_MS.get()
        attempt.latency_ms = round(wire if wire is not None else (time.perf_counter() - self.started) * 1000, 2)
        attempt.server_ms = _SERVER_MS.get()
        if self.started_at:  # when the request went out, for traces
            attempt.started_at = round(self.started_at, 3)
        if self.waited_ms and not self.attempts:  # the wait came before the first call of this generate()
            attempt.waited_ms, attempt.wait_reason = round(self.waited_ms, 2), self.wait_reason
        self.attempts.append(attempt)
        return attempt

    def _on_response(self, response: Any) -> None:
        attempt = self.new_attempt()
        usage = getattr(response, "usage", None)
        attempt.tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        attempt.tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        attempt.cost_usd = cost_usd(self.spec, attempt.tokens_in, attempt.tokens_out)
        attempt.response_model = _provider_word(getattr(response, "model", None))
        attempt.system_fingerprint = _provider_word(getattr(response, "system_fingerprint", None))
        self.tokens = response_tokens(response)
        self.breaker.record(None)

    def _on_error(self, error: Exception, **kwargs: Any) -> None:
        failed = classify(error)
        attempt = self.new_attempt()
        attempt.error_kind, attempt.error = failed.kind.value, failed.message
        self.breaker.record(failed.kind, failed.retry_after)

    def _on_parse_error(self, error: Exception, **kwargs: Any) -> None:
        if self.attempts:
            from pydantic import ValidationError

            summary = validation_summary(error) if isinstance(error, ValidationError) else type(error).__name__
            self.attempts[-1].error_kind = ErrorKind.INVALID_OUTPUT.value
            self.attempts[-1].error = summary


class OpenAICompatClient:
    """One model endpoint of a run: its client, its price and its concurrency bound."""

    def __init__(
        self, name: str, spec: ModelSpec, concurrency: int, base_url: str | None = None, model_id: str | None = None
    ) -> None:
        self.name = name
        self.spec = spec
        self.model = model_id or spec.model or name
        self.base_url = base_url or spec.base_url
        self.slots = min(concurrency, spec.max_concurrency or self.default_slots or concurrency)
        """Requests this client has in flight at most."""
        self._semaphore = asyncio.Semaphore(self.slots)
        key = spec.api_key.get_secret_value() if spec.api_key else "not-needed"
        self.breaker = CircuitBreaker(spec.breaker)
        # aiohttp under httpx's API: httpcore's connection pool spends ~10 ms of CPU per request
        # at 64 connections in flight, aiohttp ~1 ms (benchmarks/throughput.py, docs/benchmarks.md).
        # The hooks time each exchange on the wire, apart from request building and parsing.
        http = openai.DefaultAioHttpClient(event_hooks={"request": [_sent], "response": [_received]})
        self._raw = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=key or "not-needed", max_retries=0, timeout=spec.timeout_s, http_client=http
        )
        self._client = instructor.from_openai(self._raw, mode=_MODES[self.mode])

    #: Requests the endpoint serves at once when the spec does not say; None: as many as the run's concurrency.
    default_slots: int | None = None

    @property
    def mode(self) -> str:
        """How the schema is sent: tools, json_schema or json."""
        return self.spec.mode or "tools"

    def parameters(self) -> dict[str, Any]:
        """Generation parameters, as recorded in decision records."""
        return {
            "model": self.model,
            "temperature": self.spec.temperature,
            "max_tokens": self.spec.max_tokens,
            "mode": self.mode,
        }

    def extra_body(self, response_model: type[BaseModel]) -> dict[str, Any] | None:
        """Provider-specific request additions (the local provider adds a grammar)."""
        return None

    async def generate(
        self,
        messages: list[dict[str, str]],
        response_model: type[BaseModel],
        reasks: int,
        rung: int,
        timeout_s: float | None = None,
        gate: Callable[[], str | None] | None = None,
        validation_context: dict[str, Any] | None = None,
        logprobs: TokenLogprobs | None = None,
        temperature: float | None = None,
    ) -> tuple[BaseModel, list[Attempt]]:
        """Ask for ``response_model``; return the output and every attempt made.

        ``timeout_s`` shortens the model's own timeout (a document's deadline). ``gate``
        is asked once a slot is free (so queued calls see spend made meanwhile) and
        returns a reason to skip the call (a spent budget), or None. ``validation_context``
        reaches ``response_model``'s validators as ``ValidationInfo.context`` (the document
        the re-ask checks judge); the messages are sent as they are, never rendered as templates.
        Given a list as ``logprobs``, token log-probabilities are asked for and the accepted answer's
        are appended to it (nothing when the endpoint returns none). ``temperature`` replaces the
        model's for this call (a vote's samples).
        Raises :class:`ModelCallError` whose ``attempts`` attribute lists the attempts.
        """
        log = _CallLog(self.name, self.spec, rung, self.breaker)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "temperature": self.spec.temperature if temperature is None else temperature,
            "max_tokens": self.spec.max_tokens,
        }
        if timeout_s is not None:
            kwargs["timeout"] = min(timeout_s, self.spec.timeout_s)
        if logprobs is not None:
            kwargs["logprobs"], kwargs["top_logprobs"] = True, 1  # llama.cpp returns none without top_logprobs
        extra = self.extra_body(response_model)
        if extra:
            kwargs["extra_body"] = extra
        async with self._semaphore:
            # checked after queueing: the breaker may have opened, or the budget run out, meanwhile
            reason = gate() if gate is not None else None
            if reason is not None:
                raise self._skipped(ErrorKind.BUDGET, reason, rung)
            hold = self.breaker.hold_s()
            if hold > (timeout_s or self.spec.timeout_s):
                raise self._skipped(ErrorKind.CIRCUIT_OPEN, f"{self.name} held by Retry-After for {hold:.1f} s", rung)
            if hold > 0:
                await asyncio.sleep(
                    hold
                )  # honour the endpoint's Retry-After for every caller, not only the one that got it
                log.waited_ms, log.wait_reason = hold * 1000, "retry_after"
            if not self.breaker.allow():
                raise self._skipped(ErrorKind.CIRCUIT_OPEN, f"circuit open for {self.name}", rung)
            log.started = time.perf_counter()
            try:
                output = await self._client.chat.completions.create(
                    response_model=prepared(response_model),
                    messages=messages,  # type: ignore[arg-type]
                    max_retries=reasks,
                    hooks=log.hooks(),
                    context=_Unrendered(validation_context or {}),
                    **kwargs,
                )
            except Exception as exc:
                failed = classify(exc)
                # the hooks already logged this call's attempts; the last one carries the final error
                last = log.attempts[-1] if log.attempts else log.new_attempt()
                last.error_kind, last.error = failed.kind.value, failed.message
                failed.attempts = log.attempts
                raise failed from None
        if logprobs is not None and log.tokens:
            logprobs.extend(log.tokens)
        return output, log.attempts

    def _skipped(self, kind: ErrorKind, message: str, rung: int) -> ModelCallError:
        error = ModelCallError(kind, message)
        error.attempts = [Attempt(rung=rung, kind="model", model=self.name, error_kind=kind.value, error=message)]
        return error

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._raw.close()


class LocalClient(OpenAICompatClient):
    """A llama-cpp-python server: JSON constrained by a grammar built from the response schema.

    instructor's ``Mode.JSON`` sends ``response_format: {type: json_object}``
    and puts the schema in the prompt; llama-cpp-python also takes the schema in
    ``response_format`` and compiles it to a grammar, so every token the model
    samples keeps the JSON valid for the schema. instructor still validates and
    re-asks on top (for constraints a grammar cannot express).
    """

    def __init__(
        self, name: str, spec: ModelSpec, concurrency: int, base_url: str | None = None, model_id: str | None = None
    ) -> None:
        if not (base_url or spec.base_url):
            # without this the openai SDK would fall back to its public endpoint
            raise ValueError(f"local model '{name}' has no server: start it with LocalEndpoints or give base_url")
        # each of llama-cpp-python's servers computes one completion at a time: more requests would
        # wait inside a server and run into the client's timeout, so they queue here instead. A server
        # of the user's (base_url) is one unless `servers` says otherwise.
        self.default_slots = (spec.servers or 1) if spec.base_url else server_count(spec)
        super().__init__(name, spec, concurrency, base_url, model_id)

    @property
    def mode(self) -> str:
        """Always ``json``: the grammar travels in ``response_format``."""
        return "json"

    def extra_body(self, response_model: type[BaseModel]) -> dict[str, Any] | None:
        """Replace instructor's schema-less ``response_format`` with one that carries the schema."""
        return {"response_format": {"type": "json_object", "schema": response_model.model_json_schema()}}


#: Clients by provider name, as pipelines spell it.
CLIENTS: dict[str, type[OpenAICompatClient]] = {"openai": OpenAICompatClient, "local": LocalClient}
