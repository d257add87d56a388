"""Suggestions for a mistyped name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    options = [str(c) for c in choices if str(c) != str(word)]  # never "unknown key 'x' (did you mean 'x'?)"
    swapped = [c for c in options if sorted(c) == sorted(str(word)) and c != word]
    matches = swapped or difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
