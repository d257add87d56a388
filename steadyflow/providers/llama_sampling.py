"""Greedy decoding under a grammar that checks one token, not the vocabulary, whenever it can.

llama-cpp-python 0.3 samples a schema-constrained answer with the chain
``penalties -> grammar -> greedy``: for every generated token the grammar tests all 151,936
vocabulary entries of the embedded model against the JSON schema's grammar, which on two cores
costs as much as computing the token itself (measured: about 30 ms of each ~62 ms token).

Greedy decoding picks the highest logit among the tokens the grammar allows. When the highest
logit overall is allowed (nearly always: the model follows the schema it was shown), that is the
answer and the grammar only needs to test that one token; only when it is refused does the grammar
filter the whole vocabulary, as llama.cpp's own ``common_sampler`` does. The token chosen is the
same as the library's in every case, so answers do not change; only the time does.

The model host calls :func:`install` before it serves. Sampling at a temperature above 0, with a
logits processor or mirostat keeps the library's chain.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

_ORIGINAL: Any = None

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class GrammarLastGreedy:
    """``penalties -> grammar -> greedy`` with the grammar tested on the winner first.

    Quacks like llama-cpp-python's ``LlamaSampler`` where ``Llama`` uses it (``sample``).
    """

    def __init__(self, llama: Any, grammar: Any, penalty_last_n: int, repeat: float, freq: float, present: float):
        import llama_cpp

        self._lib = llama_cpp
        self._n_vocab = int(llama.n_vocab())
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._grammar:
            self._grammar = self._penalties = None  # nothing for close() to free
            raise ValueError("llama.cpp refused the grammar")
        self._penalties = llama_cpp.llama_sampler_init_penalties(self._n_vocab, penalty_last_n, repeat, freq, present)
        # the whole vocabulary, reused for every token: ids fixed, logits copied in
        self._all = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
        self._all["id"] = np.arange(self._n_vocab, dtype=np.intc)
        self._all_view = self._array(self._all)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._one_view = self._array(self._one)

    def _array(self, data: np.ndarray[Any, Any]) -> Any:
        lib = self._lib
        pointer = data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
        return lib.llama_token_data_array(data=pointer, size=len(data), selected=-1, sorted=False)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """The next token: the best-scoring token the grammar allows; accepted into penalties and grammar."""
        lib = self._lib
        logits = lib.llama_get_logits_ith(ctx.ctx, idx)
        self._all["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._all_view.size, self._all_view.selected, self._all_view.sorted = self._n_vocab, -1, False
        lib.llama_sampler_apply(self._penalties, ctypes.byref(self._all_view))
        token = int(np.argmax(self._all["logit"]))
        self._one[0] = self._all[token]
        self._one_view.size, self._one_view.selected, self._one_view.sorted = 1, -1, False
        lib.llama_sampler_apply(self._grammar, ctypes.byref(self._one_view))
        if math.isinf(float(self._one["logit"][0])):
            # the unconstrained winner breaks the schema: filter the vocabulary, as the library does
            lib.llama_sampler_apply(self._grammar, ctypes.byref(self._all_view))
            token = int(np.argmax(self._all["logit"]))
        lib.llama_sampler_accept(self._penalties, token)
        lib.llama_sampler_accept(self._grammar, token)
        return token

    def accept(self, token: int) -> None:
        """Record a token chosen elsewhere (llama-cpp-python's API; unused by ``generate``)."""
        self._lib.llama_sampler_accept(self._penalties, token)
        self._lib.llama_sampler_accept(self._grammar, token)

    def reset(self) -> None:
        """Forget the history and restart the grammar."""
        self._lib.llama_sampler_reset(self._penalties)
        self._lib.llama_sampler_reset(self._grammar)

    def close(self) -> None:
        """Free the llama.cpp samplers (each once, whatever __init__ got to)."""
        lib = getattr(self, "_lib", None)
        for name in ("_penalties", "_grammar"):
            pointer = getattr(self, name, None)
            setattr(self, name, None)
            if pointer and lib is not None:
                lib.llama_sampler_free(pointer)

    def __del__(self) -> None:
        self.close()


def _init_sampler(self: Any, **kwargs: Any) -> Any:
    grammar = kwargs.get("grammar")
    plain = kwargs.get("logits_processor") is None and not kwargs.get("mirostat_mode", 0)
    if grammar is None or kwargs.get("temp", 0.8) != 0.0 or not plain:
        return _ORIGINAL(self, **kwargs)
    return GrammarLastGreedy(
        self,
        grammar,
        penalty_last_n=self.last_n_tokens_size,
        repeat=kwargs.get("repeat_penalty", 1.0),
        freq=kwargs.get("frequency_penalty", 0.0),
        present=kwargs.get("presence_penalty", 0.0),
    )


def install() -> None:
    """Use :class:`GrammarLastGreedy` for greedy grammar-constrained sampling in this process."""
    global _ORIGINAL
    from llama_cpp.llama import Llama

    if _ORIGINAL is None:
        _ORIGINAL = Llama._init_sampler
        Llama._init_sampler = _init_sampler  # type: ignore[method-assign,assignment]
