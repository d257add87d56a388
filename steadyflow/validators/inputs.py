"""The input side of the safety layer: injection signs and PII redaction, before any provider sees a text.

Redaction covers every value of a document that a prompt can render, not only its text: the id
(file names such as ``jane.doe@example.com.txt``), its fields (an e-mail's ``from``) and the
outputs of earlier stages. Each value is redacted *before* rendering, with one placeholder map
per document, rather than the rendered message as a whole: the template is the pipeline author's
trusted text, which presidio would otherwise mangle (label descriptions tagged as names or places),
and the checks and the rules rung need the redacted text of the document alone, numbered as the
model saw it. What a template could still put together from innocent parts is caught by
:meth:`PreparedInput.scrub` on the rendered message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from steadyflow.audit.records import Verdict
from steadyflow.spec.models import InputSpec
from steadyflow.validators.injection import injection_signs
from steadyflow.validators.pii import Redactor, entity_types, id_view, joined


@dataclass
class PreparedInput:
    """What the model will see, what was hidden from it, and the verdicts on the way.

    ``text``, ``doc_id``, ``fields`` and ``outputs`` are redacted when the stage asks for it;
    the prompt, the checks and the rules rung all read these, never the originals.
    """

    text: str
    doc_id: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    pii: list[str] = field(default_factory=list)
    injection: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    quarantine: str | None = None
    redactor: Redactor | None = None

    def scrub(self, message: str) -> str:
        """``message`` with every value redacted anywhere in this document replaced by its placeholder."""
        return self.redactor.scrub(message) if self.redactor is not None else message


def prepare(
    spec: InputSpec,
    text: str,
    doc_id: str = "",
    fields: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
) -> PreparedInput:
    """Flag injection signs (or quarantine, if asked), then redact the PII types the stage names."""
    prepared = PreparedInput(text, doc_id, dict(fields or {}), dict(outputs or {}))
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
        _redact(prepared, Redactor(spec.redact_pii))
        took = round((time.perf_counter() - started) * 1000, 3)
        counts = {e: sum(1 for p in prepared.originals if p.startswith(f"<{e}_")) for e in prepared.pii}
        message = ", ".join(f"{e} x{n}" for e, n in counts.items())
        prepared.verdicts.append(
            Verdict(
                "redact_pii",
                "safety",
                True,
                "fix" if counts else "pass",
                f"redacted before the model: {message}" if counts else "",
                None,
                took,
            )
        )
    return prepared


def _values(fields: dict[str, Any], outputs: dict[str, Any]) -> list[str]:
    """The distinct strings of a document's fields and earlier outputs, in order."""
    values: list[str] = []
    _strings(fields, values)
    _strings(outputs, values)
    return list(dict.fromkeys(values))


def presidio_text(text: str, doc_id: str, fields: dict[str, Any], outputs: dict[str, Any]) -> str:
    """The one text presidio reads to redact a document (see :func:`_redact`): a check worker prefetches it."""
    return joined([text, id_view(doc_id), *_values(fields, outputs)])


def _redact(prepared: PreparedInput, redactor: Redactor) -> None:
    """Redact text, id, fields and outputs of ``prepared`` in place, into one placeholder map."""
    unique = _values(prepared.fields, prepared.outputs)
    # one presidio call for all of it (spaCy's pass is the cost); the text comes first, so its placeholders
    # are numbered as when it was redacted alone
    text, doc_id, *redacted = redactor.many(
        [prepared.text, prepared.doc_id, *unique], [prepared.text, id_view(prepared.doc_id), *unique]
    )
    # a value presidio found in one place is hidden in every other place too
    mapping = {value: redactor.scrub(new) for value, new in zip(unique, redacted, strict=True)}
    prepared.text, prepared.doc_id = redactor.scrub(text), redactor.scrub(doc_id)
    prepared.fields = _rebuild(prepared.fields, mapping)
    prepared.outputs = _rebuild(prepared.outputs, mapping)
    prepared.originals, prepared.pii, prepared.redactor = redactor.originals, entity_types(redactor.originals), redactor


def _strings(value: Any, into: list[str]) -> None:
    """Every string inside ``value`` (dict values, list and tuple items), in order."""
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, into)


def _rebuild(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` with each string replaced by its redacted form (keys are structure and stay)."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {key: _rebuild(item, mapping) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rebuild(item, mapping) for item in value]
    return value
