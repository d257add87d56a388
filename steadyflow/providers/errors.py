"""Typed errors of a model call, and which of them are worth retrying.

Messages built here never include response or document text: only status
codes, error types and field paths, so they are safe for decision records.
"""

from __future__ import annotations

import json
from enum import StrEnum

import aiohttp
import openai
from pydantic import ValidationError

from steadyflow.audit.records import Attempt, validation_summary


class ErrorKind(StrEnum):
    """Why a model call did not produce an accepted output."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    EMPTY = "empty_response"
    INVALID_OUTPUT = "invalid_output"
    TRUNCATED = "truncated"
    CLIENT_ERROR = "client_error"
    UNKNOWN = "unknown"
    CIRCUIT_OPEN = "circuit_open"
    """Not called: the endpoint's breaker is open."""
    BUDGET = "budget_exhausted"
    """Not called: the run's or the pipeline's budget is spent."""
    DEADLINE = "deadline"
    """Not called: the document's deadline has passed."""


TRANSIENT = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.EMPTY})
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


def classify(exc: BaseException) -> ModelCallError:
    """Map any exception of a model call to a :class:`ModelCallError`."""
    if isinstance(exc, ModelCallError):
        return exc
    from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException

    if isinstance(exc, IncompleteOutputException):
        return ModelCallError(ErrorKind.TRUNCATED, "output cut at max_tokens (finish_reason=length)")
    if isinstance(exc, InstructorRetryException):
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            return ModelCallError(ErrorKind.INVALID_OUTPUT, f"invalid after {exc.n_attempts} attempts: {validation_summary(cause)}")
        if isinstance(cause, json.JSONDecodeError):
            return ModelCallError(ErrorKind.INVALID_OUTPUT, f"invalid JSON after {exc.n_attempts} attempts")
        if cause is not None:
            return classify(cause)
        return ModelCallError(ErrorKind.INVALID_OUTPUT, f"no valid output after {exc.n_attempts} attempts")
    if isinstance(exc, openai.APITimeoutError) and not _dropped_connection(exc):
        return ModelCallError(ErrorKind.TIMEOUT, "no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError(ErrorKind.CONNECTION, "connection failed or was reset")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ModelCallError(ErrorKind.RATE_LIMITED, "HTTP 429", _retry_after(exc))
        if status >= 500:
            return ModelCallError(ErrorKind.SERVER_ERROR, f"HTTP {status}", _retry_after(exc))
        return ModelCallError(ErrorKind.CLIENT_ERROR, f"HTTP {status}")
    if isinstance(exc, ValidationError):
        return ModelCallError(ErrorKind.INVALID_OUTPUT, validation_summary(exc))
    if isinstance(exc, (IndexError, KeyError, AttributeError, TypeError)):
        # instructor reading a response with no choices / no message / no tool call
        return ModelCallError(ErrorKind.EMPTY, f"response had no usable content ({type(exc).__name__})")
    return ModelCallError(ErrorKind.UNKNOWN, type(exc).__name__)
