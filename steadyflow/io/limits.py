"""Bounds on reading one document: every reader stays within them whatever a file holds.

A document over a bound is quarantined with the bound in its reason (never its text);
the batch goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    """How much time and memory one document may take to read."""

    file_bytes: int = 32 * MIB
    """A file of a folder source; a larger one is quarantined without being read."""
    record_bytes: int = 8 * MIB
    """One JSONL line or CSV row; a longer one is skipped in chunks (never held whole) and quarantined."""
    json_depth: int = 64
    """Nesting of a JSON document or line; deeper ones would hit Python's recursion limit here or later."""
    int_digits: int = 640
    """Digits of a JSON integer; Python refuses to print integers over 4300 digits, and sinks choke on far less."""
    pdf_seconds: float = 10.0
    """Wall-clock time to extract one PDF's text (in a worker process, killed when over)."""
    pdf_memory_bytes: int = 1024 * MIB
    """Address space the PDF worker may add to what it uses idle (RLIMIT_AS)."""
    pdf_chars: int = 2_000_000
    """Characters extracted from one PDF; more is quarantined (far above any stage's max_chars)."""


LIMITS = ReadLimits()

# Characters that must not reach an id, a path in a record or a log line as they are: C0/C1 controls
# (newlines split log lines and CSV rows), lone UTF-16 surrogates (they cannot be encoded as UTF-8, so
# every sink would fail on them), line/paragraph separators and bidi overrides (they disguise text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: str) -> str:
    r"""``value`` with unsafe characters written as escapes (``\x0a``, ``\udcff``): one safe line."""
    return _UNSAFE.sub(_escape, value)


def has_surrogate(value: str) -> bool:
    """Whether ``value`` holds a lone UTF-16 surrogate (valid in a Python str, never in UTF-8)."""
    return _SURROGATE.search(value) is not None


def without_surrogates(value: str) -> tuple[str, int]:
    """``value`` with each lone surrogate replaced by U+FFFD, and how many there were."""
    return _SURROGATE.subn("\ufffd", value)
