"""A model's confidence in its answer, from the token log-probabilities its endpoint returned.

The confidence of an enum or boolean field is the probability the model gave to the tokens of
the value it chose (``exp`` of their summed log-probabilities), read off where that value sits in
the generated JSON. It is the model's own, unconstrained distribution: a grammar or a schema that
forced the shape does not raise it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from steadyflow.spec.output_schema import takes_confidence

TokenLogprobs = list[tuple[str, float]]
"""(token text, log-probability) of every generated token, in order."""


def response_tokens(response: Any) -> TokenLogprobs | None:
    """The generated tokens and their log-probabilities of an OpenAI-style chat completion, or None."""
    choices = getattr(response, "choices", None)
    logprobs = getattr(choices[0], "logprobs", None) if isinstance(choices, list) and choices else None
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not isinstance(content, list) or not content:
        return None
    tokens: TokenLogprobs = []
    for item in content:
        token, logprob = getattr(item, "token", None), getattr(item, "logprob", None)
        if not isinstance(token, str) or not isinstance(logprob, int | float) or not math.isfinite(logprob):
            return None  # a malformed answer gives no confidence rather than a wrong one
        tokens.append((token, float(min(logprob, 0.0))))
    return tokens


def scored_fields(schema: dict[str, Any]) -> list[str]:
    """Top-level fields of an output JSON schema that take a confidence: enums and booleans."""
    return [name for name, prop in (schema.get("properties") or {}).items() if takes_confidence(prop)]


def field_confidence(tokens: TokenLogprobs, output: dict[str, Any], fields: list[str]) -> dict[str, float]:
    """For each of ``fields`` whose value is found in the generated text: the probability of that value.

    The value's characters (a string's without its quotes) are located after ``"field":`` in the
    concatenated tokens; every token overlapping them counts. Fields not found are left out.
    """
    text = "".join(token for token, _ in tokens)
    ends = []
    position = 0
    for token, _ in tokens:
        position += len(token)
        ends.append(position)
    found: dict[str, float] = {}
    for name in fields:
        value = output.get(name)
        if not isinstance(value, str | bool):
            continue
        match, literal = None, ""
        for literal in dict.fromkeys((json.dumps(value, ensure_ascii=False), json.dumps(value))):
            # as a model writes it (é), else as JSON may escape it (\u00e9)
            match = re.search(rf'"{re.escape(name)}"\s*:\s*{re.escape(literal)}', text)
            if match is not None:
                break
        if match is None:
            continue
        start, end = match.end() - len(literal), match.end()
        if isinstance(value, str):
            start, end = start + 1, end - 1  # the value, not its quotes (which a tokenizer may merge with it)
        total, begin = 0.0, 0
        for (_, logprob), stop in zip(tokens, ends, strict=True):
            if stop > start and begin < max(end, start + 1):
                total += logprob
            begin = stop
        found[name] = round(math.exp(total), 6)
    return found
