"""Semantic checks: whether the output is grounded in the document, consistent, and about the right thing."""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Any

from rapidfuzz import fuzz

from steadyflow.spec.validation import ConfidenceCheck, DateOrderCheck, GroundedCheck, SimilarCheck, SumCheck
from steadyflow.validators.base import Context, Finding, get_path
from steadyflow.validators.structural import as_comparable

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def _found(value: str, spec: GroundedCheck, text: str, normalised_text: str) -> bool:
    if spec.match == "exact":
        return value in text
    needle = normalise(value)
    if not needle:
        return True
    if spec.match == "normalized":
        return f" {needle} " in f" {normalised_text} "
    return needle in normalised_text or fuzz.partial_ratio(needle, normalised_text) / 100 >= spec.threshold


def grounded(spec: GroundedCheck, output: dict[str, Any], context: Context) -> Finding:
    """Every string of ``fields`` occurs in the source text (exactly, normalised, or fuzzily)."""
    normalised_text = normalise(context.text)
    missing = []
    for name in spec.fields:
        value = get_path(output, name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and v and not _found(v, spec, context.text, normalised_text) for v in values):
            missing.append(name)
    message = (
        spec.message or f"not found in the document ({spec.match} match): {', '.join(missing)}; quote the document"
    )
    return Finding(not missing, message if missing else "", fields=missing)


def _numbers(output: dict[str, Any], names: list[str]) -> list[float] | None:
    found: list[float] = []
    for name in names:
        value = get_path(output, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                return None
            found.append(float(item))
    return found


def sum_check(spec: SumCheck, output: dict[str, Any], context: Context) -> Finding:
    """``parts`` add up to ``total`` within ``tolerance``."""
    parts, total = _numbers(output, spec.parts), _numbers(output, [spec.total])
    if parts is None or not total:
        return Finding(
            False, spec.message or f"{', '.join(spec.parts)} and {spec.total} must be numbers", fields=[spec.total]
        )
    ok = abs(sum(parts) - total[0]) <= spec.tolerance
    return Finding(ok, spec.message or f"{' + '.join(spec.parts)} must equal {spec.total}", fields=[spec.total])


def date_order(spec: DateOrderCheck, output: dict[str, Any], context: Context) -> Finding:
    """The dates of ``fields`` are in (strictly, if asked) ascending order; empty ones are skipped."""
    dates = [(name, as_comparable(get_path(output, name))) for name in spec.fields]
    present = [(n, d) for n, d in dates if d is not None]
    if any(isinstance(d, str | int | float) for _, d in present):
        return Finding(False, spec.message or f"{', '.join(spec.fields)} must be ISO 8601 dates", fields=spec.fields)
    for (a, first), (b, second) in itertools.pairwise(present):
        try:
            wrong = first >= second if spec.strict else first > second
        except TypeError:  # a date and a datetime
            wrong = str(first) > str(second)
        if wrong:
            return Finding(
                False,
                spec.message or f"{a} must come {'before' if spec.strict else 'no later than'} {b}",
                fields=[a, b],
            )
    return Finding(True)


def confidence(spec: ConfidenceCheck, output: dict[str, Any], context: Context) -> Finding:
    """The model's probability of its value for ``spec.field`` is at least ``spec.min``.

    Passes for outputs that are no model answer (rules, default, cache): there is nothing to be unsure of.
    """
    if context.confidence is None:
        return Finding(True)
    value = context.confidence.get(spec.field)
    if value is None:
        message = f"no confidence for '{spec.field}': the endpoint returned no log-probabilities for it"
        return Finding(False, spec.message or message, fields=[spec.field])
    message = f"confidence of '{spec.field}' {value:.2f} < {spec.min}"
    return Finding(value >= spec.min, spec.message or message, fields=[spec.field])


def similar_texts(spec: SimilarCheck, output: dict[str, Any], context: Context) -> list[str]:
    """The texts :func:`similar` embeds for this output (a check worker embeds a batch's at once)."""
    value = get_path(output, spec.field)
    if value is None or value == "":
        return []
    return [str(value), context.text] if spec.to == "source" else [context.text]


def similar(spec: SimilarCheck, output: dict[str, Any], context: Context) -> Finding:
    """Embedding similarity of the field to the source, or of the source to the chosen label's description."""
    from steadyflow.validators.embeddings import embedder

    value = get_path(output, spec.field)
    if value is None or value == "":
        return Finding(True)
    if spec.to == "source":
        score = embedder().similarity(str(value), context.text)
        what = f"{spec.field} is not about the document"
    else:
        description = (spec.labels or {}).get(str(value))
        if description is None:
            return Finding(
                False, spec.message or f"{spec.field} has no label description for its value", fields=[spec.field]
            )
        score = embedder().similarity(context.text, description, keep_b=True)
        what = f"the document does not match the description of the chosen {spec.field}"
    ok = score >= spec.threshold
    return Finding(ok, spec.message or f"{what} (similarity {score:.2f} < {spec.threshold})", fields=[spec.field])
