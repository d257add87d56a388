"""A document moving through a pipeline, and the checks it must pass first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steadyflow.spec.models import InputSpec


@dataclass
class Document:
    """One untrusted input document and what the stages made of it."""

    id: str
    text: str
    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    load_error: str | None = None
    """Why the source could not read it (undecodable, bad JSON...); it is quarantined."""
    id_made: bool = False
    """The id was made by steadyflow (a fallback, escaped or cut), not given by the source: a real id wins over it."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rungs: dict[str, str] = field(default_factory=dict)
    review: bool = False
    quarantined: tuple[str, str] | None = None
    """(stage id, reason) once a stage quarantined it; later stages skip it."""


def stage_text(doc: Document, spec: InputSpec) -> str | None:
    """The text a stage reads: the document's text or one of its fields."""
    if spec.field == "text":
        return doc.text
    value = doc.fields.get(spec.field)
    return None if value is None else str(value)


def check_input(doc: Document, spec: InputSpec) -> str | None:
    """Return why ``doc`` must be quarantined before any model sees it, or None."""
    if doc.load_error:
        return doc.load_error
    for name in spec.required:
        if doc.fields.get(name) in (None, ""):
            return f"missing required field '{name}'"
    text = stage_text(doc, spec)
    if text is None:
        return f"document has no field '{spec.field}'"
    if "\x00" in text:
        return "binary content (NUL bytes)"
    size = len(text.strip())
    if size == 0:
        return "empty document"
    if size < spec.min_chars:
        return f"too short: {size} characters < min_chars {spec.min_chars}"
    if size > spec.max_chars:
        return f"too large: {size} characters > max_chars {spec.max_chars}"
    return None
