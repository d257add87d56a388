"""One registry of things known by a short name: built-ins, ``@decorator`` plugins and installed packages.

Checks, routing estimators and stage kinds each keep a :class:`Registry`. A plugin registers with
the registry's decorator in a module the pipeline names under ``plugins:``, or ships an entry point
in the registry's group (``steadyflow.validators``, ...), loaded the first time a name is not found.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from steadyflow.core.names import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name, e.g. ``Registry[Plugin]("check", "steadyflow.validators")``."""

    def __init__(self, what: str, group: str | None = None) -> None:
        """``what`` names the kind in messages ("check", "stage kind"); ``group`` is its entry-point group, if any."""
        self.what = what
        self.group = group
        self._items: dict[str, T] = {}
        self._builtin: set[str] = set()
        self._entry_points_loaded = group is None
        self.broken: dict[str, str] = {}
        """Entry points that failed to load: name -> the error's type (reported by :meth:`unknown`)."""

    def add(self, name: str, item: T, *, builtin: bool = False) -> T:
        """Register ``item`` as ``name`` (a later registration of the same name replaces it)."""
        self._items[name] = item
        if builtin:
            self._builtin.add(name)
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers what it decorates as ``name``."""

        def decorate(item: T) -> T:
            return self.add(name, item)

        return decorate

    def get(self, name: str) -> T | None:
        """The item registered as ``name``, loading the entry points once if it is not (yet) known."""
        if name not in self._items:
            self._load_entry_points()
        return self._items.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def names(self, *, plugins_only: bool = False) -> list[str]:
        """Every registered name, sorted (after loading entry points); ``plugins_only`` leaves out the built-ins."""
        self._load_entry_points()
        return sorted(n for n in self._items if not (plugins_only and n in self._builtin))

    def unknown(self, name: str, also: tuple[str, ...] = ()) -> str:
        """``unknown <what> 'name' (did you mean ...?)``, or the known names when none is close.

        ``also`` are names known elsewhere (built-ins kept outside the registry) offered as suggestions too.
        """
        known = [*also, *self.names()]
        if name in self.broken:
            return f"{self.what} '{name}' is installed but cannot be loaded: {self.broken[name]}"
        hint = did_you_mean(name, known) or f" (known: {', '.join(sorted(set(known))) or 'none'})"
        return f"unknown {self.what} '{name}'{hint}"

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Undo every registration made inside the block (tests register plugins without leaking them).

        Entry points are read afresh inside the block (a test may put a package on ``sys.path``);
        on leaving, what was loaded before, and whether it was, comes back as it was.
        """
        saved = dict(self._items), set(self._builtin), dict(self.broken), self._entry_points_loaded
        self._entry_points_loaded = self.group is None
        try:
            yield self
        finally:
            self._items, self._builtin, self.broken, self._entry_points_loaded = saved

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.group is None:
            return
        self._entry_points_loaded = True
        for entry in importlib.metadata.entry_points(group=self.group):
            try:
                self._items.setdefault(entry.name, entry.load())
            except Exception as exc:  # an installed package's bug must not stop every pipeline
                self.broken[entry.name] = f"{type(exc).__name__} (in {entry.value})"
