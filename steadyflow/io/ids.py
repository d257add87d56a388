"""Document ids: one safe line each, bounded in length, unique within a source, stable across runs.

Resume skips the ids a run already completed, and sinks key rows by id, so two documents under
one id lose one of them. Duplicates are renamed ``id~N`` with the first N that is neither a real
id of the source nor already given; the real ids that could clash are known before the first
document is yielded (a first pass over the source), so a renamed id never takes a later real one.
The same source gives the same ids in the same order on every run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from steadyflow.core.document import Document
from steadyflow.io.limits import printable

MAX_ID_CHARS = 200
"""Longer ids are cut and made unique with a digest of the whole id."""
_KEEP = MAX_ID_CHARS - 20
_RENAMED = re.compile(r"~\d+\Z")


def clean_id(value: str | None, fallback: str) -> str:
    """``value`` as an id: ``fallback`` when empty, control characters escaped, at most MAX_ID_CHARS."""
    if value is None or not value.strip():
        return fallback
    value = printable(value)
    if len(value) <= MAX_ID_CHARS:
        return value
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=6).hexdigest()
    return f"{value[:_KEEP]}~h{digest}"


def _key(doc_id: str) -> int:
    # 8-byte digests, not the strings: memory per document stays small however long ids are.
    # Two ids sharing a digest (about 1 in 2**64) only make the second one renamed, never a clash.
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class UniqueIds:
    """Gives each id once; a repeated id gets the first free ``id~N``."""

    def __init__(self, real_ids: Iterable[str]) -> None:
        # real ids that a renamed or made id could take: ``x~2``, ``jsonl-7``, ``a\x0ab`` (callers pass those, or all)
        self._reserved = {_key(doc_id) for doc_id in real_ids}
        self._given: set[int] = set()
        self._next: dict[int, int] = {}

    def give(self, doc_id: str, made: bool = False) -> str:
        """``doc_id`` if it is free, else the first ``doc_id~N`` that is.

        A ``made`` id (a fallback, escaped or cut one) is not free when a real id of the
        source is the same string: the document that really has that id keeps it.
        """
        key = _key(doc_id)
        if key not in self._given and not (made and key in self._reserved):
            self._given.add(key)
            return doc_id
        number = self._next.get(key, 2)
        while True:
            candidate = f"{doc_id}~{number}"
            number += 1
            renamed = _key(candidate)
            if renamed not in self._given and renamed not in self._reserved:
                break
        self._next[key] = number
        self._given.add(renamed)
        return candidate


def unique(docs: Iterable[Document], real_ids: Iterable[str]) -> Iterator[Document]:
    """``docs`` with ids made unique; ``real_ids`` are the source's own ids that could clash (a first pass)."""
    ids = UniqueIds(real_ids)
    for doc in docs:
        doc.id = ids.give(doc.id, doc.id_made)
        yield doc
