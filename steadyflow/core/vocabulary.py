"""Statuses, rung kinds and error kinds, and the one rule that says which rung ended a document.

These names are stored in decision records, printed by ``run`` and ``report`` and queried in
SQL, so they are string enums: an enum member *is* its stored string.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """How a stage ended for one document (a decision record's ``status``)."""

    VALIDATED = "validated"
    """A model's output passed every check."""
    CACHED = "cached"
    """An earlier validated output, from the output cache."""
    RULES = "rules"
    """The rules extractor's output."""
    DEFAULT = "default"
    """The stage's safe default (flagged for review when the stage says so)."""
    QUARANTINED = "quarantined"
    """No output: the document is set aside with its reason."""


class RungKind(StrEnum):
    """The kinds of rung a ladder is made of (an attempt's ``kind``)."""

    MODEL = "model"
    CACHE = "cache"
    RULES = "rules"
    DEFAULT = "default"


class ErrorKind(StrEnum):
    """Why an attempt did not produce an accepted output (an attempt's ``error_kind``)."""

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
    CONTEXT_OVERFLOW = "context_overflow"
    """The prompt and the answer's max_tokens do not fit the model's context (counted before sending, or refused)."""
    HEDGE_LOST = "hedge_lost"
    """Cancelled: the other call of a hedged pair answered first (its input is paid, estimated)."""
    CACHE_MISS = "cache_miss"
    CACHE_STALE = "cache_stale"
    RULES_FAILED = "rules_failed"
    """The rules gave no output that fits the schema."""
    RULES_ERROR = "rules_error"
    """The rules extractor failed on this document (a bug or a resource error)."""
    INVALID_DEFAULT = "invalid_default"


SKIPPED = frozenset({ErrorKind.CIRCUIT_OPEN, ErrorKind.BUDGET, ErrorKind.DEADLINE})
"""Kinds of an attempt that was never made (nothing was sent, nothing was paid)."""

QUARANTINED = Status.QUARANTINED.value


def ended_by(status: str, rung_label: str | None) -> str:
    """Which rung ended a document's stage, as the summary, the report and the artifact count it.

    A document stopped by a check at some rung is counted as quarantined, not by that rung; otherwise
    by its rung's label ('model:small', 'cache:exact', 'rules', 'default'), or its status when it has none.
    """
    if status == QUARANTINED:
        return QUARANTINED
    return rung_label or status


ENDED_BY_SQL = f"CASE WHEN status = '{QUARANTINED}' THEN '{QUARANTINED}' ELSE COALESCE(rung_label, status) END"
""":func:`ended_by` in SQL, over a decision record's ``status`` and ``rung_label`` columns.

For queries that count in the database.
"""
