"""Opening input files without ever blocking, following a swapped link, or reading without bound."""

from __future__ import annotations

import os
import stat

from steadyflow.io.formats import Refused

_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISLNK, "symlink"),
)
# O_NONBLOCK: opening a FIFO must not wait for a writer (it would wait forever)
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a quarantine reason."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _unreadable(exc: OSError) -> Refused:
    return Refused(f"unreadable: {exc.strerror or type(exc).__name__}")


def open_regular(path: str, follow: bool = True) -> int:
    """A read-only descriptor of the regular file at ``path``; Refused for anything else.

    The file is stat-ed before it is opened, so FIFOs, sockets and devices are never opened (a
    device read can have effects); the open descriptor is checked again, in case the path was
    swapped in between. ``follow=False`` refuses a symlink as the last component (the caller
    resolved the path and checked where it leads).
    """
    try:
        mode = os.stat(path, follow_symlinks=follow).st_mode
    except OSError as exc:
        raise _unreadable(exc) from None
    if not stat.S_ISREG(mode):
        raise Refused(f"not a regular file: {kind_of(mode)}")
    try:
        fd = os.open(path, _FLAGS | (0 if follow else _NOFOLLOW))
    except OSError as exc:
        raise _unreadable(exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Refused(f"not a regular file: {kind_of(mode)}")
    return fd


def read_bounded(fd: int, cap: int) -> bytes:
    """All bytes of an open file, or Refused when it holds more than ``cap`` (not read whole)."""
    if os.fstat(fd).st_size > cap:
        raise Refused(f"file larger than {cap} bytes")
    chunks, size = [], 0
    try:
        while chunk := os.read(fd, min(cap + 1 - size, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:  # it grew while being read
                raise Refused(f"file larger than {cap} bytes")
    except OSError as exc:
        raise _unreadable(exc) from None
    return b"".join(chunks)
