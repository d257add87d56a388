"""The rules extractor: deterministic output from regexes and keyword maps.

Used as a ladder rung and as the ``rules`` stage kind. Patterns come from the
pipeline author; they run on untrusted text with a time limit per match, so a
pathological document cannot hang a run.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import regex
from pydantic import BaseModel, ValidationError

from steadyflow.spec.models import FieldRule, RulesSpec

MATCH_TIMEOUT_S = 0.2


class RulesFailed(Exception):
    """The rules could not produce an output that fits the stage's schema."""


@lru_cache(maxsize=4096)
def _keyword_pattern(word: str) -> regex.Pattern[str]:
    return regex.compile(rf"(?<!\w){regex.escape(word)}(?!\w)", regex.IGNORECASE)


@lru_cache(maxsize=1024)
def _pattern(source: str) -> regex.Pattern[str]:
    return regex.compile(source)


def _apply(rule: FieldRule, text: str) -> Any:
    if rule.regex is not None:
        try:
            match = _pattern(rule.regex).search(text, timeout=MATCH_TIMEOUT_S)
        except TimeoutError:
            match = None
        if match is not None:
            try:
                value = match.group(rule.group)
            except (IndexError, regex.error):
                value = match.group(0)
            # a group that did not take part in the match (``(?:by (\w+)|acquired)``) is None: no value,
            # so the keywords and the default get their turn
            if isinstance(value, str) and value.strip():
                return value.strip()
    if rule.keywords:
        best, best_hits = None, 0
        for value, words in rule.keywords.items():
            hits = sum(len(_keyword_pattern(w).findall(text, timeout=MATCH_TIMEOUT_S)) for w in words)
            if hits > best_hits:  # ties keep the value declared first
                best, best_hits = value, hits
        if best is not None:
            return best
    return rule.default


@lru_cache(maxsize=256)  # a JSON Schema build per document would sit on the fallback's hot path
def _max_lengths(model: type[BaseModel]) -> dict[str, int]:
    props = model.model_json_schema().get("properties", {})
    return {name: int(p["maxLength"]) for name, p in props.items() if "maxLength" in p}


def extract(rules: RulesSpec, model: type[BaseModel], text: str) -> BaseModel:
    """Apply ``rules`` to ``text``; raise :class:`RulesFailed` if the result does not validate."""
    values: dict[str, Any] = {}
    limits = _max_lengths(model)
    for name, rule in rules.fields.items():
        try:
            value = _apply(rule, text)
        except TimeoutError:
            value = rule.default
        if isinstance(value, str) and name in limits:
            value = value[: limits[name]]
        if value is not None:
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}))
        raise RulesFailed(f"rules gave no valid value for: {fields or 'output'}") from None
