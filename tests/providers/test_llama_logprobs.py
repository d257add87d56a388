"""The model host's log-probabilities: the same numbers as llama-cpp-python's, computed only where asked."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_cpp.llama import Llama

from steadyflow.providers.llama_logprobs import _Rows


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), start=st.integers(0, 5), scale=st.floats(0.1, 50))
def test_rows_give_the_library_s_log_probabilities_at_every_index(
    seed: int, rows: int, start: int, scale: float
) -> None:
    logits = (np.random.default_rng(seed).standard_normal((rows, 300)) * scale).astype(np.single)
    reference = Llama.logits_to_logprobs(logits)[start:]
    lazy = _Rows(logits)[start:]
    assert len(lazy) == len(reference)
    for mine, theirs in zip(lazy, reference, strict=True):
        for index in (0, 7, 299):
            assert abs(mine[index] - float(theirs[index])) < 1e-4
        assert list(mine) == [] and len(mine) == 0  # no alternatives listed: nothing to sort per token
