"""PDF text extraction in a worker process, bounded in wall-clock time, memory and output size.

pypdf is pure Python and a hostile PDF can keep it busy for minutes (hundreds of pages sharing
one highly compressed content stream: seconds per page) or make it allocate gigabytes. So it
never runs in the batch's process: a worker (``python -m steadyflow.io.pdf``) extracts one PDF
at a time under an address-space limit (RLIMIT_AS) and a character cap, and is killed when a PDF
takes longer than the time bound. The worker is reused for the next PDF (starting Python and
pypdf costs far more than a small PDF) and replaced every ``_RECYCLE`` PDFs so its memory stays
flat over a folder of many PDFs. Results are returned one at a time, never held.

Protocol over the worker's stdin/stdout: the worker writes one ready byte once started, then for
each request (8-byte big-endian length + PDF bytes) a reply (8-byte length + a UTF-8 JSON object
``{"text", "pages", "error", "restart"}``).
"""

from __future__ import annotations

import io
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steadyflow.io.limits import LIMITS, MIB, ReadLimits, without_surrogates

PDF_MAX_PAGES = 500
"""Pages read from one PDF; a longer one is quarantined rather than read for minutes."""
_RECYCLE = 100
"""PDFs one worker extracts before it is replaced (memory fragmentation in a long-lived worker)."""
_START_SECONDS = 120.0
"""Time for a worker to start (Python + pypdf); not charged to any document, generous for a loaded machine."""
_READY = b"R"


@dataclass
class PdfText:
    """What extraction made of one PDF: its text and page count, or why it could not be read."""

    text: str
    pages: int
    error: str | None = None
    replaced: int = 0
    """Characters of the text layer that were lone surrogates, now U+FFFD."""


class _Timeout(Exception):
    pass


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    """``size`` bytes from a pipe, or _Timeout at ``deadline`` (monotonic), or EOFError when it closes."""
    chunks, got = [], 0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise _Timeout
            chunk = os.read(fd, min(size - got, MIB))
            if not chunk:
                raise EOFError("worker closed its output")
            chunks.append(chunk)
            got += len(chunk)
    return b"".join(chunks)


class PdfExtractor:
    """Extracts PDFs one at a time in a reused worker process; use as a context manager."""

    def __init__(self, limits: ReadLimits = LIMITS) -> None:
        self.limits = limits
        self._proc: subprocess.Popen[bytes] | None = None
        self._served = 0

    def __enter__(self) -> PdfExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (it also exits by itself when its input closes)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._served < _RECYCLE:
            return self._proc
        self.close()
        # the worker handles hostile bytes: it gets the module path but none of this process's
        # environment (API keys live there) and no stderr (pypdf warnings may quote a document)
        paths = [str(Path(__file__).resolve().parents[2]), *(p for p in sys.path if p)]
        env = {"PYTHONPATH": os.pathsep.join(paths), "PYTHONSAFEPATH": "1"}
        limits = self.limits
        argv = [
            sys.executable,
            "-m",
            "steadyflow.io.pdf",
            str(limits.pdf_chars),
            str(limits.pdf_memory_bytes),
            str(PDF_MAX_PAGES),
        ]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True
        )
        self._proc, self._served = proc, 0
        if proc.stdout is None or _read_exact(proc.stdout.fileno(), 1, time.monotonic() + _START_SECONDS) != _READY:
            raise EOFError("PDF worker did not start")
        return proc

    def extract(self, raw: bytes) -> PdfText:
        """The text of one PDF; every failure, timeout or excess is a PdfText with ``error`` set."""
        try:
            proc = self._worker()
        except (OSError, EOFError, _Timeout):
            self.close()
            return PdfText("", 0, "PDF extraction worker could not start")
        seconds = self.limits.pdf_seconds
        deadline = time.monotonic() + seconds
        try:
            if proc.stdin is None or proc.stdout is None:
                raise EOFError
            proc.stdin.write(len(raw).to_bytes(8, "big") + raw)
            proc.stdin.flush()
            size = int.from_bytes(_read_exact(proc.stdout.fileno(), 8, deadline), "big")
            reply: dict[str, Any] = json.loads(_read_exact(proc.stdout.fileno(), size, deadline))
        except _Timeout:
            self.close()
            return PdfText("", 0, f"PDF extraction exceeded {seconds:g} s")
        except (OSError, EOFError, ValueError):
            code = proc.poll()
            self.close()
            # a negative code is the signal: SIGKILL or SIGSEGV when memory ran out in C code
            return PdfText("", 0, f"PDF extraction failed (worker exit code {code})")
        self._served += 1
        if reply.get("restart"):
            self.close()
        return PdfText(
            str(reply.get("text", "")), int(reply.get("pages", 0)), reply.get("error"), int(reply.get("replaced", 0))
        )


# ---- the worker process ---------------------------------------------------------------------


def _limit_memory(extra: int) -> None:
    """Cap this process's address space at what it uses now plus ``extra`` bytes."""
    try:
        import resource
    except ImportError:  # not on Windows: the time bound and the character cap still hold
        return
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 512 * MIB
    limit = used + extra
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _text_of(raw: bytes, max_chars: int, max_pages: int) -> dict[str, Any]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(raw))
    if reader.is_encrypted:
        return {"text": "", "pages": 0, "error": "encrypted PDF"}
    pages = len(reader.pages)
    if pages > max_pages:
        return {"text": "", "pages": pages, "error": f"PDF has {pages} pages > {max_pages}"}
    parts, size = [], 0
    for page in reader.pages:
        part = page.extract_text() or ""
        size += len(part) + 1
        if size > max_chars:
            return {"text": "", "pages": pages, "error": f"PDF text longer than {max_chars} characters"}
        parts.append(part)
    # broken ToUnicode maps yield lone surrogates, which no sink can encode; extraction is approximate
    # anyway, so they become U+FFFD, counted in the document's fields rather than silent
    text, replaced = without_surrogates("\n".join(parts))
    return {"text": text, "pages": pages, "error": None, "replaced": replaced}


def _serve(max_chars: int, max_memory: int, max_pages: int) -> None:
    import pypdf  # noqa: F401  (imported before the memory cap is set, so the cap is all for the document)

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed by a library may corrupt the replies
    _limit_memory(max_memory)
    replies.write(_READY)
    replies.flush()
    while len(header := requests.read(8)) == 8:
        raw = requests.read(int.from_bytes(header, "big"))
        try:
            reply = _text_of(raw, max_chars, max_pages)
        except MemoryError:
            reply = {
                "text": "",
                "pages": 0,
                "error": f"PDF extraction exceeded the memory cap ({max_memory // MIB} MB)",
                "restart": True,
            }
        except Exception as exc:
            # pypdf raises a zoo of types on damaged or hostile files (KeyError, zlib.error, struct.error,
            # RecursionError...): each means "cannot read this document", quarantined with the type only
            reply = {"text": "", "pages": 0, "error": f"unreadable PDF: {type(exc).__name__}"}
        body = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        replies.write(len(body).to_bytes(8, "big") + body)
        replies.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
