"""The checks a document must pass before any model sees it, and the text a stage reads."""

from __future__ import annotations

from steadyflow.core.document import Document
from steadyflow.spec.models import InputSpec


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
