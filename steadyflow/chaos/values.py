"""Values that fit (or deliberately break) a JSON Schema, for the chaos endpoint."""

from __future__ import annotations

import random
import re
from typing import Any

_FALLBACK_WORDS = ["customer", "reports", "an", "issue", "with", "the", "service", "today"]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if isinstance(o, dict) and o.get("type") != "null"]
            if options:
                return _resolve(options[0], root)
    return schema


def words_of(text: str) -> list[str]:
    """The words of a prompt, used to build plausible strings."""
    return re.findall(r"[A-Za-z][A-Za-z'-]{1,}", text)[:400] or _FALLBACK_WORDS


def fit(schema: dict[str, Any], rng: random.Random, words: list[str], root: dict[str, Any] | None = None) -> Any:
    """A value valid for ``schema`` (constraints on length, range and size honoured)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: fit(sub, rng, words, root) for name, sub in props.items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, min(int(schema.get("maxItems", 3)), low + 3))
        return [fit(schema.get("items", {}), rng, words, root) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, max(low, int(schema.get("maximum", low + 100))))
    if kind == "number":
        bottom = float(schema.get("minimum", 0.0))
        return round(rng.uniform(bottom, max(bottom, float(schema.get("maximum", bottom + 100.0)))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return _string(schema, rng, words)


def _string(schema: dict[str, Any], rng: random.Random, words: list[str]) -> str:
    low = int(schema.get("minLength", 1))
    high = int(schema.get("maxLength", 120))
    start = rng.randrange(len(words))
    text = " ".join(words[start : start + rng.randint(3, 12)]) or "ok"
    while len(text) < low:
        text += " " + rng.choice(words)
    return text[: max(high, 0)]


def wrong_types(schema: dict[str, Any], rng: random.Random, words: list[str]) -> Any:
    """Parseable JSON whose fields all have the wrong type."""
    root = schema
    schema = _resolve(schema, root)
    out: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        kind = _resolve(sub, root).get("type", "string")
        out[name] = {
            "string": 42,
            "integer": "forty-two",
            "number": "many",
            "boolean": "maybe",
            "array": "x",
            "object": 7,
        }.get(kind)
    return out
