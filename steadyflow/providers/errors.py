"""Typed errors of a model call, and which of them are worth retrying.

Messages built here never include response or document text: only status
codes, error types and field paths, so they are safe for decision records.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import aiohttp
import openai
from pydantic import ValidationError

from steadyflow.audit.records import Attempt, validation_summary
from steadyflow.core.vocabulary import ErrorKind

if TYPE_CHECKING:
    from instructor.core.exceptions import InstructorRetryException

TRANSIENT = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.EMPTY}
)
"""Kinds a retry of the same call may fix. Client errors (400/401/404...) are the caller's fault."""


class ModelCallError(Exception):
    """A model rung failed; carries a kind, a safe message and an optional Retry-After."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.attempts: list[Attempt] = []
        """Every attempt of the failed call, with tokens and cost (set by the client)."""


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _dropped_connection(exc: BaseException) -> bool:
    """True when a "timeout" was really a closed or reset connection.

    The aiohttp transport (httpx-aiohttp) reports every aiohttp connection error as
    httpx.ConnectTimeout; the original error is further down the exception's causes.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
            return True
        if isinstance(cause, (aiohttp.ServerTimeoutError, TimeoutError)):
            return False
        cause = cause.__cause__ or cause.__context__
    return False


_CONTEXT_CODES = ("context_length_exceeded", "exceed_context_size")
_CONTEXT_WORDS = re.compile(
    r"maximum context length|context (?:length|window|size)|exceeds? (?:the )?(?:available )?context", re.I
)
_NUMBER = r"(\d[\d,]*)"
_CONTEXT_NUMBERS = {  # OpenAI, vLLM and llama-cpp-python word it this way
    "context": re.compile(rf"maximum context length is {_NUMBER}", re.I),
    "prompt": re.compile(rf"(?:{_NUMBER} in the messages|messages resulted in {_NUMBER} tokens)", re.I),
    "completion": re.compile(rf"{_NUMBER} in the completion", re.I),
}


def _number(found: re.Match[str] | None) -> int | None:
    if found is None:
        return None
    digits = next(g for g in found.groups() if g is not None)
    return int(digits.replace(",", ""))


def context_overflow(exc: openai.APIStatusError) -> ModelCallError | None:
    """A 400 whose body says the prompt did not fit the context, as ``context_overflow`` with the token counts it gives.

    Only the code and the numbers are read from the body: its text may quote the prompt.
    """
    body = exc.body if isinstance(exc.body, dict) else {}
    code = f"{body.get('code') or ''} {body.get('type') or ''} {exc.code or ''}"
    message = str(body.get("message") or exc.message or "")[:2000]  # bounded: the numbers are at its start
    if not any(c in code for c in _CONTEXT_CODES) and not _CONTEXT_WORDS.search(message):
        return None
    context = _number(_CONTEXT_NUMBERS["context"].search(message))
    prompt = _number(_CONTEXT_NUMBERS["prompt"].search(message))
    completion = _number(_CONTEXT_NUMBERS["completion"].search(message))
    if isinstance(body.get("n_ctx"), int) and isinstance(body.get("n_prompt_tokens"), int):  # llama.cpp's own server
        context, prompt = body["n_ctx"], body["n_prompt_tokens"]
    if context is None or prompt is None:
        return ModelCallError(
            ErrorKind.CONTEXT_OVERFLOW, f"prompt exceeds context (HTTP {exc.status_code} from the endpoint)"
        )
    asked = f"{prompt} + max_tokens {completion}" if completion else f"{prompt}"
    return ModelCallError(
        ErrorKind.CONTEXT_OVERFLOW, f"prompt exceeds context ({asked} > {context} tokens, said the endpoint)"
    )


def classify(exc: BaseException) -> ModelCallError:
    """Map any exception of a model call to a :class:`ModelCallError`."""
    if isinstance(exc, ModelCallError):
        return exc
    from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException

    if isinstance(exc, IncompleteOutputException):
        return ModelCallError(ErrorKind.TRUNCATED, "output cut at max_tokens (finish_reason=length)")
    if isinstance(exc, InstructorRetryException):
        return _from_retries(exc)
    if isinstance(exc, openai.APITimeoutError) and not _dropped_connection(exc):
        return ModelCallError(ErrorKind.TIMEOUT, "no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError(ErrorKind.CONNECTION, "connection failed or was reset")
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc)
    if isinstance(exc, ValidationError):
        return ModelCallError(ErrorKind.INVALID_OUTPUT, validation_summary(exc))
    if isinstance(exc, (IndexError, KeyError, AttributeError, TypeError)):
        # instructor reading a response with no choices / no message / no tool call
        return ModelCallError(ErrorKind.EMPTY, f"response had no usable content ({type(exc).__name__})")
    return ModelCallError(ErrorKind.UNKNOWN, type(exc).__name__)


def _from_retries(exc: InstructorRetryException) -> ModelCallError:
    """Instructor gave up re-asking: invalid output or JSON, or whatever the call's own error (its cause) was."""
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        return ModelCallError(
            ErrorKind.INVALID_OUTPUT, f"invalid after {exc.n_attempts} attempts: {validation_summary(cause)}"
        )
    if isinstance(cause, json.JSONDecodeError):
        return ModelCallError(ErrorKind.INVALID_OUTPUT, f"invalid JSON after {exc.n_attempts} attempts")
    if cause is not None:
        return classify(cause)
    return ModelCallError(ErrorKind.INVALID_OUTPUT, f"no valid output after {exc.n_attempts} attempts")


def _from_status(exc: openai.APIStatusError) -> ModelCallError:
    """An HTTP error status: 429 rate limited, 5xx server error, a context overflow, else the client's error."""
    status = exc.status_code
    if status == 429:
        return ModelCallError(ErrorKind.RATE_LIMITED, "HTTP 429", _retry_after(exc))
    if status >= 500:
        return ModelCallError(ErrorKind.SERVER_ERROR, f"HTTP {status}", _retry_after(exc))
    if status in (400, 413, 422) and (overflow := context_overflow(exc)) is not None:
        return overflow
    return ModelCallError(ErrorKind.CLIENT_ERROR, f"HTTP {status}")
