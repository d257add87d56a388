"""Safety checks on output: PII (presidio) and guardrails-ai Guards for words, names, secrets and format."""

from __future__ import annotations

from typing import Any

from steadyflow.spec.validation import BannedCheck, CompetitorsCheck, FormatCheck, PiiCheck, SecretsCheck
from steadyflow.validators.base import Context, Finding, get_path, set_path, string_fields
from steadyflow.validators.guards import SteadyGuard
from steadyflow.validators.pii import mask


def _each_string(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


#: What ``pii`` looks for when a pipeline does not say: identifiers of a person, not dates, places or
#: organisations (presidio tags "Monday" and "Berlin" too, and masking them ruins a summary).
IDENTIFIERS = [
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "PERSON",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "US_PASSPORT",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "UK_NHS",
    "UK_NINO",
    "IP_ADDRESS",
    "CRYPTO",
    "MEDICAL_LICENSE",
]


def pii(spec: PiiCheck, output: dict[str, Any], context: Context) -> Finding:
    """No PII of the given types in the given fields; the fix masks it as ``<ENTITY>``."""
    fixed, failing, kinds = dict(output), [], set()
    for name in string_fields(output, spec.fields):
        value = get_path(output, name)
        if isinstance(value, list):
            results = [
                mask(v, spec.entities or IDENTIFIERS, spec.score) if isinstance(v, str) else (v, []) for v in value
            ]
            masked: Any = [r[0] for r in results]
            found = sorted({k for r in results for k in r[1]})
        elif isinstance(value, str):
            masked, found = mask(value, spec.entities or IDENTIFIERS, spec.score)
        else:
            continue
        if found:
            failing.append(name)
            kinds.update(found)
            fixed = set_path(fixed, name, masked)
    message = spec.message or f"PII in output ({', '.join(sorted(kinds))}) in: {', '.join(failing)}"
    return Finding(not failing, message if failing else "", fixed=fixed if failing else None, fields=failing)


def guard_check(
    guard: SteadyGuard, fields: list[str] | None, spec_message: str | None, output: dict[str, Any]
) -> Finding:
    """Run one Guard over each string of the chosen fields; the fix is the Guard's."""
    fixed, failing, reasons = dict(output), [], []
    for name in string_fields(output, fields):
        value = get_path(output, name)
        strings = _each_string(value)
        results = [guard.check(s) for s in strings]
        if all(r.passed for r in results):
            continue
        failing.append(name)
        reasons += [reason for r in results for reason in r.reasons]
        repaired = [r.fixed if r.fixed is not None else s for r, s in zip(results, strings, strict=True)]
        fixed = set_path(fixed, name, repaired if isinstance(value, list) else repaired[0])
    message = spec_message or f"{'; '.join(sorted(set(reasons)))} in: {', '.join(failing)}"
    return Finding(not failing, message if failing else "", fixed=fixed if failing else None, fields=failing)


def make_guard(spec: BannedCheck | CompetitorsCheck | SecretsCheck | FormatCheck) -> SteadyGuard:
    """The Guard for a safety check spec."""
    if isinstance(spec, BannedCheck):
        return SteadyGuard("terms", terms=spec.words, replacement="***", what="banned word(s)")
    if isinstance(spec, CompetitorsCheck):
        return SteadyGuard("terms", terms=spec.names, replacement="[REDACTED]", what="competitor or secret name(s)")
    if isinstance(spec, SecretsCheck):
        return SteadyGuard("secrets")
    return SteadyGuard(
        "format", min_chars=spec.min_chars, max_chars=spec.max_chars, pattern=spec.pattern, single_line=spec.single_line
    )


def guard_fields(spec: BannedCheck | CompetitorsCheck | SecretsCheck | FormatCheck) -> list[str] | None:
    """The fields a Guard check covers (None: every string field)."""
    return [spec.field] if isinstance(spec, FormatCheck) else spec.fields
