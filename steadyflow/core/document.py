"""A document moving through a pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One untrusted input document and what the stages made of it."""

    id: str
    text: str
    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    load_error: str | None = None
    """Why the source could not read it (undecodable, bad JSON...); it is quarantined."""
    line: int | None = None
    """The line a table's row starts on (JSONL, CSV); None for a file of its own."""
    id_made: bool = False
    """The id was made by steadyflow (a fallback, escaped or cut), not given by the source: a real id wins over it."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rungs: dict[str, str] = field(default_factory=dict)
    review: bool = False
    quarantined: tuple[str, str] | None = None
    """(stage id, reason) once a stage quarantined it; later stages skip it."""
