"""Log-probabilities from llama-cpp-python's server at the cost of the tokens asked about, not the vocabulary.

llama-cpp-python 0.3 answers ``logprobs`` for a chat completion by taking the log-softmax of the
logits of *every* token in the context (prompt included) and then, for each generated token,
sorting all 151,936 vocabulary entries in Python to find the top ones: seconds per answer on two
cores, for the one number a confidence needs (the sampled token's log-probability). The host
installs :func:`install` before it serves: the 2-D call (that whole-context one) then returns rows
that compute one token's log-softmax only when it is asked for, and list no alternatives, so
``top_logprobs`` of an answer holds the sampled token alone. The 1-D call (streaming) is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

_ORIGINAL: Any = None


class _Row:
    """One token's log-probabilities, computed at the index asked for; it lists no alternatives."""

    def __init__(self, logits: np.ndarray[Any, Any]) -> None:
        self._logits = logits
        self._norm: float | None = None

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[float]:
        return iter(())

    def __getitem__(self, index: int) -> float:
        if self._norm is None:
            top = float(self._logits.max())
            self._norm = top + float(np.log(np.exp(self._logits - top, dtype=np.float64).sum()))
        return float(self._logits[index]) - self._norm


class _Rows:
    """Every context position's row, sliced and walked without computing any of them."""

    def __init__(self, logits: np.ndarray[Any, Any]) -> None:
        self._logits = logits

    def __getitem__(self, key: slice) -> _Rows:
        return _Rows(self._logits[key])

    def __iter__(self) -> Iterator[_Row]:
        return (_Row(row) for row in self._logits)

    def __len__(self) -> int:
        return int(self._logits.shape[0])


def _logits_to_logprobs(logits: Any, axis: int = -1) -> Any:
    if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis == -1:
        return _Rows(logits)
    return _ORIGINAL(logits, axis)


def install() -> None:
    """Replace ``Llama.logits_to_logprobs`` in this process (the model host's, nowhere else)."""
    global _ORIGINAL
    from llama_cpp.llama import Llama

    if _ORIGINAL is None:
        _ORIGINAL = Llama.logits_to_logprobs
        Llama.logits_to_logprobs = staticmethod(_logits_to_logprobs)  # type: ignore[method-assign]
