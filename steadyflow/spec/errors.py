"""Problems found in a pipeline file, reported as one line each.

Every error the loader raises is a :class:`SpecError` carrying a list of
:class:`Problem`; the CLI prints them as ``path:line:col: where: message`` and
exits with code 2. Nothing else may escape the loader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in one file, at a 1-based line and column."""

    path: str
    line: int
    col: int
    where: str
    message: str

    def __post_init__(self) -> None:
        # one problem, one line: a key or value from the file may hold newlines or control characters
        for name in ("path", "where", "message"):
            object.__setattr__(self, name, _one_line(getattr(self, name)))

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        return f"{self.path}:{self.line}:{self.col}:{where} {self.message}"


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def error_line(exc: BaseException) -> str:
    """One line for an operational error (disk full, a busy folder): the file and the OS reason, or the first line.

    Used for the CLI's message and for the Prefect flow run's state, never with a document in it.
    """
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class SpecError(Exception):
    """A pipeline file (or a file it names) is invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: tuple[str | int, ...]) -> str:
    """Format a data path as ``stages[0].ladder[2].model``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def validation_summary(exc: ValidationError) -> str:
    """'category: literal_error; summary: missing' - field paths and error types only."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['type']}")
    return "; ".join(parts)
