"""Caches of accepted model outputs, as ladder rungs: exact and semantic, in SQLite.

Entries are scoped by pipeline, stage and prompt version, and tagged with the model
and parameters that produced them: an exact hit needs the same input hash and one of
the stage's current (model, parameters); a semantic hit needs an input embedding within
the rung's cosine threshold. A hit is only a candidate: the ladder runs the stage's
checks on it like on any other output. Nothing but hashes, vectors and outputs is kept.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exact (
    scope TEXT NOT NULL, input_hash TEXT NOT NULL, model_key TEXT NOT NULL, output TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (scope, input_hash, model_key)
);
CREATE TABLE IF NOT EXISTS semantic (
    scope TEXT NOT NULL, model_key TEXT NOT NULL, vector BLOB NOT NULL, output TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS semantic_scope ON semantic (scope);
"""


class OutputCache:
    """One SQLite file shared by runs; safe within one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._vectors: dict[str, tuple[np.ndarray[Any, Any], list[tuple[str, str, float]]]] = {}

    def get_exact(
        self, scope: str, input_hash: str, model_keys: list[str], ttl_h: float | None
    ) -> dict[str, Any] | None:
        """The newest output for this input from one of these models, if fresh enough."""
        oldest = time.time() - ttl_h * 3600 if ttl_h else 0.0
        marks = ",".join("?" * len(model_keys))
        with self._lock:
            row = self._db.execute(
                "SELECT output FROM exact "
                f"WHERE scope = ? AND input_hash = ? AND model_key IN ({marks}) AND created >= ? "
                "ORDER BY created DESC LIMIT 1",
                (scope, input_hash, *model_keys, oldest),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def get_similar(
        self, scope: str, vector: np.ndarray[Any, Any], model_keys: list[str], threshold: float, ttl_h: float | None
    ) -> tuple[dict[str, Any], float] | None:
        """The output of the most similar earlier input, if within ``threshold``.

        Only a fresh output from a current model counts.
        """
        matrix, rows = self._load(scope)
        if not rows:
            return None
        scores = matrix @ vector
        oldest = time.time() - ttl_h * 3600 if ttl_h else 0.0
        for index in np.argsort(-scores):
            if scores[index] < threshold:
                return None
            model_key, output, created = rows[index]
            if model_key in model_keys and created >= oldest:
                return json.loads(output), float(scores[index])
        return None

    def _load(self, scope: str) -> tuple[np.ndarray[Any, Any], list[tuple[str, str, float]]]:
        with self._lock:
            if scope not in self._vectors:
                found = self._db.execute(
                    "SELECT vector, model_key, output, created FROM semantic WHERE scope = ?", (scope,)
                ).fetchall()
                matrix = (
                    np.array([np.frombuffer(v, dtype=np.float32) for v, *_ in found])
                    if found
                    else np.zeros((0, 384), np.float32)
                )
                self._vectors[scope] = (matrix, [(m, o, c) for _, m, o, c in found])
            return self._vectors[scope]

    def put(
        self, scope: str, input_hash: str, model_key: str, output: dict[str, Any], vector: np.ndarray[Any, Any] | None
    ) -> None:
        """Remember an accepted output (and its input's vector, for semantic lookups)."""
        text, now = json.dumps(output), time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO exact VALUES (?,?,?,?,?)", (scope, input_hash, model_key, text, now)
            )
            if vector is not None:
                blob = np.asarray(vector, dtype=np.float32).tobytes()
                self._db.execute("INSERT INTO semantic VALUES (?,?,?,?,?)", (scope, model_key, blob, text, now))
                if scope in self._vectors:
                    matrix, rows = self._vectors[scope]
                    self._vectors[scope] = (np.vstack([matrix, vector[None, :]]), [*rows, (model_key, text, now)])

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def model_key(parameters: dict[str, Any]) -> str:
    """What identifies the producer of an output: model name and generation parameters."""
    import hashlib

    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]


class CacheContext:
    """One document's view of the cache: its scope, input hash and (lazily) its embedding."""

    def __init__(
        self, cache: OutputCache, scope: str, input_hash: str, text: str, clients: dict[str, Any], semantic: bool
    ) -> None:
        self.cache, self.scope, self.input_hash, self.text = cache, scope, input_hash, text
        self.model_keys = [model_key(client.parameters()) for client in clients.values()]
        self.semantic = semantic
        self._vector: np.ndarray[Any, Any] | None = None

    def vector(self) -> np.ndarray[Any, Any]:
        """The input's embedding (computed once per document)."""
        if self._vector is None:
            from steadyflow.validators.embeddings import embedder

            self._vector = embedder().embed([self.text])[0]
        return self._vector

    def lookup(self, rung: Any, index: int, model: type[Any]) -> tuple[Any, Any]:
        """(output or None, the attempt to record) for a cache rung."""
        from steadyflow.audit.records import Attempt

        started = time.perf_counter()
        attempt = Attempt(rung=index, kind="cache", model=f"cache:{rung.cache}")
        if rung.cache == "exact":
            found = self.cache.get_exact(self.scope, self.input_hash, self.model_keys, rung.ttl_h)
        else:
            hit = self.cache.get_similar(self.scope, self.vector(), self.model_keys, rung.threshold, rung.ttl_h)
            found = hit[0] if hit else None
        attempt.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if found is None:
            attempt.error_kind, attempt.error = "cache_miss", f"no {rung.cache} match"
            return None, attempt
        try:
            return model.model_validate(found), attempt
        except ValueError:  # an entry from before the output schema changed
            attempt.error_kind, attempt.error = "cache_stale", "cached output no longer fits the schema"
            return None, attempt

    def store(self, client: Any, output: Any) -> None:
        """Remember an accepted model output."""
        vector = self.vector() if self.semantic else None
        self.cache.put(
            self.scope, self.input_hash, model_key(client.parameters()), output.model_dump(mode="json"), vector
        )
