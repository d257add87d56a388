"""Scorers: how one output field is compared with its label.

A scorer is named by a short string, ``kind`` or ``kind:parameter``:

============== ============================================================== ==================
name           correct when                                                   default for
============== ============================================================== ==================
``exact``      equal (``1`` and ``1.0`` are equal, ``"1"`` and ``1`` not)      enums, booleans,
                                                                              integers
``tolerance``  within ``tolerance:0.5`` (absolute) or ``tolerance:2%``         numbers (1%)
               (relative to the label)
``set``        the same set; the score is F1 (precision and recall are         lists
               summed over the dataset, micro-averaged)
``normalised`` equal after Unicode NFKC, case folding, and collapsing          strings
               whitespace and punctuation at the ends
``fuzzy``      similarity of the normalised strings >= ``fuzzy:0.8``
               (difflib ratio; the score is the similarity)
``embedding``  cosine similarity of MiniLM sentence vectors >= ``embedding:0.7``
============== ============================================================== ==================

A missing output (the document was quarantined, or the field is null when the label is not)
scores 0.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from steadyflow.core.scorer_names import SCORER_KINDS, ScorerError, parse_scorer

__all__ = ["SCORER_KINDS", "Score", "Scorer", "ScorerError", "default_scorer", "normalise", "scorer"]

MAX_COMPARED_CHARS = 4000
"""Strings are cut to this many characters before a fuzzy comparison (difflib is quadratic)."""


@dataclass(frozen=True)
class Score:
    """One field of one document, scored."""

    score: float
    """0..1: 1 or 0 for exact scorers, F1 for sets, the similarity for fuzzy and embedding."""
    correct: bool
    true_positives: int = 0
    predicted: int = 0
    expected: int = 0
    """Set scorers only: counts for micro-averaged precision and recall."""


Scorer = Callable[[Any, Any], Score]


def _exact(predicted: Any, expected: Any) -> Score:
    correct = _equal(predicted, expected)
    return Score(1.0 if correct else 0.0, correct)


def _equal(a: Any, b: Any) -> bool:
    """``a == b``, except that a boolean equals only a boolean, inside lists and objects too."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _tolerance(limit: float, relative: bool) -> Scorer:
    def score(predicted: Any, expected: Any) -> Score:
        if not _is_number(predicted) or not _is_number(expected):
            return _exact(predicted, expected)
        if not (_finite(predicted) and _finite(expected)):
            return _exact(predicted, expected)  # no distance to infinity or NaN: only equal is close
        # as exact rationals, so that integers beyond the range of a float compare too
        allowed = Fraction(limit) * abs(Fraction(expected)) if relative else Fraction(limit)
        correct = abs(Fraction(predicted) - Fraction(expected)) <= allowed
        return Score(1.0 if correct else 0.0, correct)

    return score


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _set(predicted: Any, expected: Any) -> Score:
    mine = _as_set(predicted)
    theirs = _as_set(expected)
    hits = len(mine & theirs)
    if not mine and not theirs:
        return Score(1.0, True)
    f1 = 2 * hits / (len(mine) + len(theirs))
    return Score(f1, mine == theirs, hits, len(mine), len(theirs))


def _as_set(value: Any) -> set[str]:
    if value is None:
        return set()
    items = value if isinstance(value, list | tuple | set) else [value]
    return {normalise(i) if isinstance(i, str) else repr(i) for i in items}


_PUNCTUATION_ENDS = re.compile(r"^[\W_]+|[\W_]+$")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, punctuation stripped from both ends."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCTUATION_ENDS.sub("", _SPACES.sub(" ", folded).strip())


def _normalised(predicted: Any, expected: Any) -> Score:
    if not isinstance(predicted, str) or not isinstance(expected, str):
        return _exact(predicted, expected)
    correct = normalise(predicted) == normalise(expected)
    return Score(1.0 if correct else 0.0, correct)


def _fuzzy(threshold: float) -> Scorer:
    def score(predicted: Any, expected: Any) -> Score:
        if not isinstance(predicted, str) or not isinstance(expected, str):
            return _exact(predicted, expected)
        a, b = normalise(predicted)[:MAX_COMPARED_CHARS], normalise(expected)[:MAX_COMPARED_CHARS]
        ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 1.0
        return Score(ratio, ratio >= threshold)

    return score


def _embedding(threshold: float) -> Scorer:
    def score(predicted: Any, expected: Any) -> Score:
        if not isinstance(predicted, str) or not isinstance(expected, str):
            return _exact(predicted, expected)
        from steadyflow.validators.embeddings import embedder

        similarity = max(0.0, float(embedder().similarity(predicted, expected)))
        return Score(similarity, similarity >= threshold)

    return score


def scorer(name: str) -> Scorer:
    """The scorer ``name`` ('exact', 'fuzzy:0.85', 'tolerance:2%'...); raises :class:`ScorerError`."""
    kind, parameter, relative = parse_scorer(name)
    if kind == "tolerance":
        return _tolerance(parameter or 0.0, relative)
    if kind == "fuzzy":
        return _fuzzy(parameter or 0.0)
    if kind == "embedding":
        return _embedding(parameter or 0.0)
    return {"exact": _exact, "set": _set, "normalised": _normalised}[kind]


def default_scorer(schema: dict[str, Any]) -> str:
    """The scorer name for a field of this JSON schema: exact, tolerance, set or normalised."""
    if "enum" in schema or "const" in schema:
        return "exact"
    kinds = _types(schema)
    if "enum" in kinds or kinds & {"boolean", "integer"}:
        return "exact"
    if "array" in kinds:
        return "set"
    if "number" in kinds:
        return "tolerance:1%"
    if "string" in kinds:
        return "normalised"
    return "exact"


def _types(schema: dict[str, Any]) -> set[str]:
    found = schema.get("type")
    kinds = set(found) if isinstance(found, list) else ({found} if isinstance(found, str) else set())
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        if isinstance(option, dict):
            if "enum" in option:
                kinds.add("enum")
            kinds |= _types(option)
    return kinds - {"null"}
