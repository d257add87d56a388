"""The audit trail's hash chain: how a record is hashed, signed, and checked link by link.

A record's hash covers every column of its row but the hash and the signature, its place
(``seq``) and the hash of the record before it (``prev_hash``): editing a row changes its hash,
deleting, inserting or swapping rows breaks a ``prev_hash`` or a ``seq``, and removing the last
rows no longer matches the head the store keeps apart. Whoever can rewrite the whole store can
still recompute every hash; a record *signed* with a key only its owner holds (Ed25519) cannot be
forged without that key, so ``verify --public-key`` catches that too.

A purge (retention) removes a prefix of the chain and appends a ``purge`` record naming the last
purged record (its ``seq`` and hash): the first record kept must follow that anchor, and the
anchor the store keeps must be the one the newest purge record names.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography is imported where keys are used: every CLI command imports this module
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
"""The ``prev_hash`` of a store's first record."""

HASHED = ("seq", "kind", "at", "run_id", "doc_key", "stage_id", "pipeline", "payload", "prev_hash")
"""The columns a record's hash covers, in this order."""


class AuditError(Exception):
    """The audit store cannot be opened, written or read, or a key is unusable (one line, no traceback)."""


def canonical(value: Any) -> str:
    """The one JSON text of ``value`` that hashes agree on: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def sha256(text: str) -> str:
    """SHA-256 of ``text`` as UTF-8, in hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def record_hash(row: Mapping[str, Any]) -> str:
    """The hash of a record: SHA-256 of the canonical JSON of its :data:`HASHED` columns."""
    return sha256(canonical([row[name] for name in HASHED]))


def _key_id(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs record hashes with an Ed25519 private key the user holds (``STEADYFLOW_AUDIT_SIGNING_KEY``)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = _key_id(key.public_key())

    def sign(self, record_hash: str) -> str:
        """The signature of a record's hash, in hex."""
        return self._key.sign(bytes.fromhex(record_hash)).hex()


def _read_pem(path: Path) -> bytes:
    try:
        return path.read_bytes()[: 64 * 1024]  # a key file is a few hundred bytes; never read a huge file whole
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the key ({exc.strerror or type(exc).__name__})") from None


def load_signer(path: Path) -> Signer:
    """The signer of an Ed25519 private key in PEM (``steadyflow audit keygen`` writes one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read_pem(path), password=None)
    except (ValueError, TypeError):
        raise AuditError(f"{path}: not an unencrypted PEM private key (steadyflow audit keygen makes one)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: the audit trail is signed with Ed25519 keys; this is another kind")
    return Signer(key)


def load_public_key(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) of an Ed25519 public key in PEM; a private key file gives its public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_pem(path)
    try:
        key: Any = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise AuditError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path}: the audit trail is signed with Ed25519 keys; this is another kind")
    return _key_id(key), key


def generate_key(path: Path) -> tuple[str, Path]:
    """Write a new Ed25519 private key to ``path`` (mode 0600, never over an existing file) and its public half.

    Returns the key id and the public key's path (``path`` with ``.pub`` added).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_path = path.with_name(path.name + ".pub")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        public_path.write_bytes(public)
    except FileExistsError:
        raise AuditError(f"{path}: already exists; a key is never overwritten") from None
    except OSError as exc:
        raise AuditError(f"{path}: cannot write the key ({exc.strerror or type(exc).__name__})") from None
    return _key_id(key.public_key()), public_path


@dataclass
class Verification:
    """What ``steadyflow audit verify`` found: the chain's extent, its signatures, and the first broken link."""

    records: int = 0
    first_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    purged_through: int = 0
    signed: int = 0
    broken: str | None = None
    """The first problem, naming the record (``record 17: ...``); None when the chain holds."""

    @property
    def ok(self) -> bool:
        """True when every link holds."""
        return self.broken is None


def verify_rows(
    rows: Iterable[Mapping[str, Any]],
    anchor: tuple[int, str],
    head: tuple[int, str],
    keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Verification:
    """Check ``rows`` (in ``seq`` order, streamed) as one chain from ``anchor`` to ``head``; stop at the first break.

    ``anchor`` is (seq, hash) of the last purged record ((0, GENESIS) when nothing was purged), ``head`` what the
    store says its last record is. With ``keys`` (key id -> public key), every record must carry a valid signature
    by one of them.
    """
    result = Verification(purged_through=anchor[0])
    seq, prev = anchor
    named_anchor: tuple[int, str] | None = None
    for row in rows:
        result.records += 1
        if result.first_seq is None:
            result.first_seq = row["seq"]
        problem = _link_problem(row, seq, prev, keys)
        if problem is not None:
            result.broken = problem
            return result
        if row.get("signature"):
            result.signed += 1
        if row["kind"] == "purge":
            named_anchor = _purge_anchor(row)
        seq, prev = row["seq"], row["hash"]
    result.head_seq, result.head_hash = seq, prev
    if (seq, prev) != tuple(head):
        result.broken = _head_problem(seq, head)
    elif anchor[0] and named_anchor != tuple(anchor):
        result.broken = (
            f"the store says records up to {anchor[0]} were purged, but no purge record in the chain says so "
            "(the oldest records were deleted, or the anchor edited)"
        )
    return result


def _link_problem(
    row: Mapping[str, Any], seq: int, prev: str, keys: Mapping[str, Ed25519PublicKey] | None
) -> str | None:
    at = row["seq"]
    if at != seq + 1:
        if at <= seq:
            return f"record {at}: out of order after record {seq} (rows reordered or renumbered)"
        missing = f"record {seq + 1}" if at == seq + 2 else f"records {seq + 1} to {at - 1}"
        return f"{missing}: missing (deleted) before record {at}"
    if row["prev_hash"] != prev:
        return (
            f"record {at}: does not follow record {seq} (its previous hash differs: "
            f"record {seq} was edited and rehashed, or rows were inserted, deleted or reordered)"
        )
    if record_hash(row) != row["hash"]:
        return f"record {at}: its content does not match its hash (edited)"
    if keys is not None:
        signature, key_id = row.get("signature"), row.get("key_id")
        if not signature:
            return f"record {at}: not signed (every record must be, with the keys given)"
        from cryptography.exceptions import InvalidSignature

        key = keys.get(str(key_id))
        if key is None:
            return f"record {at}: signed by key {key_id}, which is not one of the keys given"
        try:
            key.verify(bytes.fromhex(str(signature)), bytes.fromhex(str(row["hash"])))
        except (InvalidSignature, ValueError):
            return f"record {at}: its signature does not verify (forged or edited)"
    return None


def _purge_anchor(row: Mapping[str, Any]) -> tuple[int, str] | None:
    try:
        payload = json.loads(row["payload"])
        return int(payload["purged_through"]), str(payload["anchor_hash"])
    except (ValueError, KeyError, TypeError):
        return None


def _head_problem(seq: int, head: tuple[int, str]) -> str:
    if head[0] > seq:
        missing = f"record {seq + 1}" if head[0] == seq + 1 else f"records {seq + 1} to {head[0]}"
        return f"{missing}: missing (the newest records were deleted; the store's head is record {head[0]})"
    if head[0] < seq:
        return f"record {head[0] + 1}: not part of the chain the store's head ends (record {head[0]}): rows appended"
    return f"record {seq}: is not the record the store's head names (edited and rehashed)"
