"""The rules extractor: deterministic output from regexes and keyword maps.

Used as a ladder rung and as the ``rules`` stage kind. Patterns come from the
pipeline author; they run on untrusted text with a time limit per match, so a
pathological document cannot hang a run.

How a field is filled, in order (the first that gives a value wins):

1. ``regex``: for a text, number or enum field, the first match; the value is the capture
   ``group`` (default 1; the whole match when the pattern has no group and ``group`` is not
   given), stripped. A group that did not take part in the match gives nothing. For a **list**
   field, *every* match (``finditer``, not overlapping), each giving its group, stripped, empty
   ones and repeats dropped, in document order, at most the field's ``max_items``. Numbers and
   booleans are read from the text by the output model (``"42"``, ``"3.5"``, ``"true"``).
2. ``keywords``: the value whose words occur most often (whole words, any case); ties keep the
   value declared first. For a list field, every value with at least one hit, most hits first.
3. ``default``.

:func:`extract` never raises anything but :class:`RulesFailed`: a match that runs out of time, or a
pattern that fails on a document, falls through to the keywords and the default, and an output
that does not validate is a :class:`RulesFailed` naming the fields (never the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex
from pydantic import BaseModel, ValidationError

from steadyflow.spec.models import FieldRule, RulesSpec

MATCH_TIMEOUT_S = 0.2
MAX_LIST_MATCHES = 1000
"""A list field takes at most this many matches (before max_items), whatever the document holds."""


class RulesFailed(Exception):
    """The rules could not produce an output that fits the stage's schema."""


@dataclass(frozen=True)
class _Shape:
    """What the extractor needs to know of one output field."""

    is_list: bool = False
    max_length: int | None = None
    max_items: int | None = None


@lru_cache(maxsize=4096)
def _keyword_pattern(word: str) -> regex.Pattern[str]:
    # whole words, any case; a phrase matches across any run of blanks or line breaks ("credit\ncard")
    phrase = r"\s+".join(regex.escape(part) for part in word.split())
    return regex.compile(rf"(?<!\w){phrase}(?!\w)", regex.IGNORECASE)


@lru_cache(maxsize=1024)
def _pattern(source: str) -> regex.Pattern[str]:
    return regex.compile(source)


def _group_value(match: regex.Match[str], group: int | str, explicit: bool) -> str | None:
    try:
        value = match.group(group)
    except (IndexError, regex.error):
        # the default group 1 of a pattern without groups is the whole match; a wrong explicit group gives nothing
        value = None if explicit else match.group(0)
    # a group that did not take part in the match (``(?:by (\w+)|acquired)``) is None: no value,
    # so the keywords and the default get their turn
    return value.strip() if isinstance(value, str) and value.strip() else None


def _from_regex(rule: FieldRule, text: str, shape: _Shape) -> Any:
    pattern = _pattern(rule.regex or "")
    explicit = "group" in rule.model_fields_set
    if not shape.is_list:
        match = pattern.search(text, timeout=MATCH_TIMEOUT_S)
        return _group_value(match, rule.group, explicit) if match is not None else None
    found: list[str] = []
    limit = min(shape.max_items if shape.max_items is not None else MAX_LIST_MATCHES, MAX_LIST_MATCHES)
    for match in pattern.finditer(text, timeout=MATCH_TIMEOUT_S):
        value = _group_value(match, rule.group, explicit)
        if value is not None and value not in found:
            found.append(value)
            if len(found) >= limit:
                break
    return found or None


def _from_keywords(rule: FieldRule, text: str, shape: _Shape) -> Any:
    hits: dict[str, int] = {}
    for value, words in (rule.keywords or {}).items():
        count = sum(len(_keyword_pattern(w).findall(text, timeout=MATCH_TIMEOUT_S)) for w in words)
        if count:
            hits[value] = count
    if not hits:
        return None
    ranked = sorted(hits, key=lambda v: -hits[v])  # stable: ties keep the value declared first
    return ranked[: shape.max_items] if shape.is_list else ranked[0]


def _apply(rule: FieldRule, text: str, shape: _Shape) -> Any:
    """The value of one field; an error or a timeout in one source leaves the next source its turn."""
    for source in (_from_regex if rule.regex is not None else None, _from_keywords if rule.keywords else None):
        if source is None:
            continue
        try:
            value = source(rule, text, shape)
        except Exception:  # TimeoutError, a regex error on this text, a RecursionError: never the rung's end
            value = None
        if value is not None:
            return value
    return rule.default


def _property_shape(prop: dict[str, Any]) -> _Shape:
    options = [prop, *prop.get("anyOf", [])]  # an optional field is anyOf [its type, null]
    for option in options:
        if option.get("type") == "array":
            return _Shape(is_list=True, max_items=option.get("maxItems"))
        if "maxLength" in option:
            return _Shape(max_length=int(option["maxLength"]))
    return _Shape()


@lru_cache(maxsize=256)  # a JSON Schema build per document would sit on the fallback's hot path
def _shapes(model: type[BaseModel]) -> dict[str, _Shape]:
    try:
        props = model.model_json_schema().get("properties", {})
    except Exception:  # a user's output_model whose schema cannot be built: fill fields as plain values
        return {}
    return {name: _property_shape(p) for name, p in props.items()}


def extract(rules: RulesSpec, model: type[BaseModel], text: str) -> BaseModel:
    """Apply ``rules`` to ``text``; raise :class:`RulesFailed` (and nothing else) if the result does not validate."""
    values: dict[str, Any] = {}
    shapes = _shapes(model)
    for name, rule in rules.fields.items():
        shape = shapes.get(name, _Shape())
        value = _apply(rule, text, shape)
        if isinstance(value, str) and shape.max_length is not None:
            value = value[: shape.max_length]
        if value is not None:
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}))
        raise RulesFailed(f"rules gave no valid value for: {fields or 'output'}") from None
    except Exception as exc:  # a user's output_model validator that raises something else
        raise RulesFailed(f"the output model raised {type(exc).__name__} on the rules' values") from None
