"""One run at a time per output folder (and per sink outside it): an OS-level lock.

The lock is ``fcntl.flock`` on a small file. The kernel releases it when the
holder's file is closed or the process dies (``kill -9`` included), so a crashed
run never leaves a stale lock behind, and no pid file has to be trusted. The
file also says who holds it, for the second run's one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".steadyflow.lock"


class LockedError(Exception):
    """Another run holds the lock; the message says which and what to do."""


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it (best effort: it may be mid-write)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8")[:1000])
        started = time.strftime("%H:%M:%S", time.localtime(float(info["started"])))
        return f"run {info['run_id']} (pid {int(info['pid'])}, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"


class RunLock:
    """An exclusive, non-blocking lock on ``path``, held by one run until :meth:`release`.

    ``what`` names the locked thing in the error (e.g. ``output folder out/``).
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def _open_locked(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.what} is in use by {_holder(self.path)}; wait for it to finish, "
                "or give this run another --output"
            ) from None
        return fd

    def acquire(self, run_id: str) -> RunLock:
        """Take the lock or raise :class:`LockedError` at once (a second run never waits)."""
        fd = self._open_locked()
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "started": time.time()}).encode())
        self._fd = fd
        return self

    def check_free(self) -> None:
        """Raise :class:`LockedError` if another run holds the lock; take nothing."""
        if self.path.exists():
            fd = self._open_locked()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release(self) -> None:
        """Let the next run in (the file stays: removing it would race with a run that just opened it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def folder_lock(folder: Path) -> RunLock:
    """The lock of an output folder: its stores, quarantine and the sinks inside it."""
    return RunLock(folder / LOCK_NAME, f"output folder {folder}")


def probe(folder: Path) -> None:
    """Raise :class:`LockedError` now if a run holds ``folder`` (a quick check before slow start-up)."""
    folder_lock(folder).check_free()
