"""The input side of the safety layer: injection signs and PII redaction, before any provider sees a text."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from steadyflow.audit.records import Verdict
from steadyflow.spec.models import InputSpec
from steadyflow.validators.injection import injection_signs
from steadyflow.validators.pii import Redaction, redact


@dataclass
class PreparedInput:
    """What the model will see, what was hidden from it, and the verdicts on the way."""

    text: str
    originals: dict[str, str] = field(default_factory=dict)
    pii: list[str] = field(default_factory=list)
    injection: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    quarantine: str | None = None


def prepare(spec: InputSpec, text: str) -> PreparedInput:
    """Flag injection signs (or quarantine, if asked), then redact the PII types the stage names."""
    prepared = PreparedInput(text)
    if spec.injection != "off":
        started = time.perf_counter()
        signs = injection_signs(text)
        took = round((time.perf_counter() - started) * 1000, 3)
        prepared.injection = signs
        action = "pass" if not signs else ("quarantine" if spec.injection == "quarantine" else "flag")
        message = f"prompt-injection signs: {', '.join(signs)}" if signs else ""
        prepared.verdicts.append(Verdict("injection", "safety", not signs, action, message, None, took))
        if signs and spec.injection == "quarantine":
            prepared.quarantine = message
            return prepared
    if spec.redact_pii:
        started = time.perf_counter()
        redaction: Redaction = redact(text, spec.redact_pii)
        took = round((time.perf_counter() - started) * 1000, 3)
        prepared.text, prepared.originals, prepared.pii = redaction.text, redaction.originals, redaction.entities
        counts = {e: sum(1 for p in redaction.originals if p.startswith(f"<{e}_")) for e in redaction.entities}
        message = ", ".join(f"{e} x{n}" for e, n in counts.items())
        prepared.verdicts.append(Verdict("redact_pii", "safety", True, "fix" if counts else "pass",
                                         f"redacted before the model: {message}" if counts else "", None, took))
    return prepared
