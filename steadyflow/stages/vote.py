"""Self-consistency: a model asked N times, the majority answer kept, the agreement as its confidence.

For endpoints that return no log-probabilities (``vote: N`` on a model rung). A value's confidence
is the share of the N votes it won; a call that failed counts as a vote for nothing, so five asked
and three agreeing is 0.6 whether or not the other two answered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

VOTE_TEMPERATURE = 0.8
"""Samples' temperature when the model's own is 0: identical greedy answers would always agree."""


def _key(value: Any) -> str:
    return repr(value)


def majority(outputs: list[dict[str, Any]], fields: list[str], asked: int) -> tuple[int, dict[str, float]]:
    """The index of the answer to keep and each field's agreement; ``outputs`` are the answers that came.

    The kept answer is the one that agrees with the most per-field majorities (the first on a tie); each
    field's confidence is the share of ``asked`` votes that its majority value won.
    """
    winners: dict[str, str] = {}
    confidence: dict[str, float] = {}
    for name in fields:
        counts = Counter(_key(o.get(name)) for o in outputs if name in o)
        if not counts:
            continue
        value, votes = counts.most_common(1)[0]
        winners[name] = value
        confidence[name] = round(votes / max(asked, 1), 6)
    scores = [sum(_key(o.get(name)) == value for name, value in winners.items()) for o in outputs]
    best = max(range(len(outputs)), key=lambda i: (scores[i], -i))
    return best, confidence
