"""guardrails-ai Guards with validators registered by steadyflow (nothing from a hub, telemetry off).

guardrails-ai is imported at first use (~0.8 s; see :func:`_import_guardrails`). Every Guard is configured with
``allow_metrics_collection=False`` *and* ``settings.rc.enable_metrics = False``
before its validators are built: guardrails reads the flag in both places, and
otherwise exports OpenTelemetry traces to a remote host.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from steadyflow.core.imports import import_without_iri_formats

_lock = threading.Lock()

#: Shapes of common credentials; a match is redacted, never recorded.
SECRET_PATTERNS = {
    "aws_access_key": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "openai_key": r"\bsk-(proj-)?[A-Za-z0-9_-]{20,}\b",
    "github_token": r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b",
    "password_assignment": r"(?i)\b(password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}",
}


def _import_guardrails() -> None:
    """Import guardrails-ai without jsonschema's IRI format checks (1.2 s of its ~2 s; no check validates IRIs)."""
    import_without_iri_formats("guardrails")


def _terms(value: str, terms: list[str]) -> list[str]:
    """The listed terms ``value`` mentions as whole words, case-insensitively."""
    return [t for t in terms if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", value, re.IGNORECASE)]


def _replace(value: str, terms: list[str], token: str) -> str:
    """``value`` with every whole-word mention of ``terms`` replaced by ``token``."""
    for term in terms:
        value = re.sub(rf"(?<!\w){re.escape(term)}(?!\w)", token, value, flags=re.IGNORECASE)
    return value


def _without_secrets(text: str) -> tuple[str, list[str]]:
    """``text`` with credentials replaced by ``[SECRET]``, and the kinds found."""
    kinds = []
    for kind, pattern in SECRET_PATTERNS.items():
        if re.search(pattern, text):
            kinds.append(kind)
            text = re.sub(pattern, "[SECRET]", text)
    return text, kinds


def _formatted(
    text: str, min_chars: int | None, max_chars: int | None, pattern: str | None, single_line: bool
) -> tuple[str, list[str]]:
    """``text`` brought to the format as far as a fix can, and what it broke."""
    problems = []
    fixed = " ".join(text.split()) if single_line else text
    if single_line and "\n" in text:
        problems.append("must be one line")
    if max_chars is not None and len(fixed) > max_chars:
        problems.append(f"longer than {max_chars} characters")
        cut = fixed[:max_chars]
        fixed = (cut[: cut.rfind(" ")] if " " in cut else cut).rstrip()  # end on a word, not inside one
    if min_chars is not None and len(text) < min_chars:
        problems.append(f"shorter than {min_chars} characters")
    if pattern is not None and not re.fullmatch(pattern, fixed):
        problems.append("does not match the required format")
    return fixed, problems


@lru_cache(maxsize=1)
def _validators() -> dict[str, type[Any]]:
    """Register steadyflow's guardrails validators once and return them by kind."""
    _import_guardrails()
    from guardrails.settings import settings
    from guardrails.validators import FailResult, PassResult, Validator, register_validator

    settings.rc.enable_metrics = False

    @register_validator(name="steadyflow/terms", data_type="string")
    class Terms(Validator):
        """Whole-word, case-insensitive mentions of listed terms (banned words, competitor or secret names)."""

        def __init__(self, terms: list[str], replacement: str, what: str, **kwargs: Any) -> None:
            super().__init__(terms=terms, replacement=replacement, what=what, **kwargs)
            self.terms, self.replacement, self.what = terms, replacement, what

        def _validate(self, value: Any, metadata: dict[str, Any]) -> Any:
            hits = _terms(str(value), self.terms)
            if not hits:
                return PassResult()
            return FailResult(
                error_message=f"mentions {len(hits)} {self.what}",
                fix_value=_replace(str(value), hits, self.replacement),
            )

    @register_validator(name="steadyflow/secrets", data_type="string")
    class Secrets(Validator):
        """Credentials (API keys, tokens, private keys, password assignments), replaced by ``[SECRET]``."""

        def _validate(self, value: Any, metadata: dict[str, Any]) -> Any:
            text, kinds = _without_secrets(str(value))
            if not kinds:
                return PassResult()
            return FailResult(error_message=f"contains credentials: {', '.join(kinds)}", fix_value=text)

    @register_validator(name="steadyflow/format", data_type="string")
    class Format(Validator):
        """Length, one line and a pattern; the fix collapses whitespace and cuts at a word."""

        def __init__(
            self, min_chars: int | None, max_chars: int | None, pattern: str | None, single_line: bool, **kwargs: Any
        ) -> None:
            super().__init__(
                min_chars=min_chars, max_chars=max_chars, pattern=pattern, single_line=single_line, **kwargs
            )
            self.min_chars, self.max_chars, self.pattern, self.single_line = min_chars, max_chars, pattern, single_line

        def _validate(self, value: Any, metadata: dict[str, Any]) -> Any:
            fixed, problems = _formatted(str(value), self.min_chars, self.max_chars, self.pattern, self.single_line)
            return FailResult(error_message="; ".join(problems), fix_value=fixed) if problems else PassResult()

    return {"terms": Terms, "secrets": Secrets, "format": Format}


@dataclass
class GuardResult:
    """What a Guard said about one value."""

    passed: bool
    fixed: Any
    reasons: list[str]


class SteadyGuard:
    """One guardrails Guard around one of steadyflow's validators, always run with the FIX action.

    The fix is computed either way; whether it is applied is the stage's ``on_fail``.
    """

    def __init__(self, kind: str, **params: Any) -> None:
        _import_guardrails()
        from guardrails import Guard, OnFailAction

        with _lock:
            validator = _validators()[kind](on_fail=OnFailAction.FIX, **params)
            guard = Guard(history_max_length=1)
            guard.configure(allow_metrics_collection=False)
            self._guard = guard.use(validator)

    def check(self, value: str) -> GuardResult:
        """Validate one string."""
        with _lock, warnings.catch_warnings():  # a Guard keeps call history: one call at a time
            warnings.simplefilter("ignore", UserWarning)
            outcome = self._guard.validate(value)
        summaries = outcome.validation_summaries or []
        reasons = [s.failure_reason or "" for s in summaries if s.validator_status == "fail"]
        return GuardResult(passed=not reasons, fixed=outcome.validated_output, reasons=reasons)
