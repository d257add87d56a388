"""Scorer names (``exact``, ``fuzzy:0.8``, ``tolerance:2%``...), parsed where pipeline files and datasets both can.

The scorers themselves live in :mod:`steadyflow.evals.scorers`.
"""

from __future__ import annotations

import math

SCORER_KINDS = ("exact", "tolerance", "set", "normalised", "fuzzy", "embedding")
_DEFAULTS = {"fuzzy": 0.8, "embedding": 0.7}


class ScorerError(ValueError):
    """A scorer name that does not parse; the message says which names exist."""


def parse_scorer(name: str) -> tuple[str, float | None, bool]:
    """``(kind, parameter, relative)`` of a scorer name; raises :class:`ScorerError`.

    ``parameter`` is the threshold of fuzzy and embedding (default 0.8, 0.7) and the tolerance of
    ``tolerance`` (default 1%, ``relative``); None for the others, which take none.
    """
    kind, has_parameter, text = name.strip().partition(":")
    kind = {"normalized": "normalised"}.get(kind, kind)
    if kind not in SCORER_KINDS:
        raise ScorerError(f"unknown scorer '{name}' (one of: {', '.join(SCORER_KINDS)}; e.g. fuzzy:0.8, tolerance:2%)")
    if kind in ("exact", "set", "normalised"):
        if has_parameter:
            raise ScorerError(f"scorer '{kind}' takes no parameter")
        return kind, None, False
    if kind == "tolerance":
        return (kind, 0.01, True) if not text else _tolerance(text)
    if not text:
        return kind, _DEFAULTS[kind], False
    try:
        value = float(text)
    except ValueError:
        raise ScorerError(f"scorer '{kind}': '{text}' is not a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise ScorerError(f"scorer '{kind}': {text} is not between 0 and 1")
    return kind, value, False


def _tolerance(text: str) -> tuple[str, float, bool]:
    relative = text.endswith("%")
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        raise ScorerError(f"scorer 'tolerance': '{text}' is not a number (0.5) or a percentage (2%)") from None
    if value < 0 or not math.isfinite(value):
        raise ScorerError(f"scorer 'tolerance': {text} must be a finite number >= 0")
    return "tolerance", value / 100 if relative else value, relative
