"""``--set dotted.key=value`` overrides and ``${ENV}`` interpolation on raw YAML data.

Both run before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as replace_field
from typing import Any

import yaml

from steadyflow.spec.errors import Problem, SpecError, format_path
from steadyflow.spec.yaml_positions import Path, Positions

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _set_source(index: int) -> str:
    return f"<--set #{index}>"


def _step(current: Any, segment: str, index: int, walked: Path) -> tuple[Any, str | int]:
    """Resolve one segment: a dict key, a list index, or a list item's ``id``."""
    if isinstance(current, list):
        if segment.isdigit() and int(segment) < len(current):
            return current, int(segment)
        for i, item in enumerate(current):
            if isinstance(item, dict) and item.get("id") == segment:
                return current, i
        raise SpecError(
            [
                Problem(
                    _set_source(index),
                    1,
                    1,
                    format_path(walked),
                    f"no list item '{segment}' (give an index or a stage id)",
                )
            ]
        )
    if isinstance(current, dict):
        return current, segment
    raise SpecError(
        [Problem(_set_source(index), 1, 1, format_path(walked), f"'{format_path(walked)}' is a value, not a mapping")]
    )


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``dotted.key=value`` assignments in place; values are parsed as YAML scalars."""
    for index, item in enumerate(overrides, start=1):
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted:
            raise SpecError([Problem(_set_source(index), 1, 1, "", f"'{item}' is not of the form dotted.key=value")])
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        current: Any = data
        walked: Path = ()
        segments = dotted.split(".")
        for segment in segments[:-1]:
            container, key = _step(current, segment, index, walked)
            if isinstance(container, dict) and key not in container:
                container[key] = {}
            current = container[key]
            walked = (*walked, key)
        container, key = _step(current, segments[-1], index, walked)
        if isinstance(container, list):
            container[int(key)] = value
        else:
            container[key] = value


ENV_FIELDS: tuple[Path, ...] = (
    ("models", "*", "api_key"),
    ("models", "*", "base_url"),
    ("models", "*", "model"),
    ("sink", "url"),
    ("audit", "url"),
)
"""The only values where ``${VAR}`` is expanded ('*' matches any key). Anywhere else a
secret could travel on (a prompt sent to a model, a record), so it is refused there.
A telemetry URL joins this list when it exists."""

_ESCAPED = "$${"
_ANY_REF = re.compile(r"\$\$\{|\$\{")
_ENV_OR_ESCAPE = re.compile(r"\$\$\{|" + _ENV.pattern)
_MIN_SCRUBBED = 4
"""Shorter expanded values are scrubbed only from problems about their own field (a bare 'a' is everywhere)."""


def _env_field(path: Path) -> bool:
    return any(
        len(path) == len(p) and all(w == "*" or w == k for w, k in zip(p, path, strict=True)) for p in ENV_FIELDS
    )


def _env_fields_text() -> str:
    return ", ".join(".".join(str(k) for k in p) for p in ENV_FIELDS)


@dataclass
class Expanded:
    """One expanded ``${VAR}``: where, which variable, and its value (only ever used to keep it out of messages)."""

    path: Path
    name: str
    value: str = field(repr=False)


@dataclass
class _Interpolation:
    """One pass of :func:`interpolate_env`: the environment it reads, and the problems and expansions it found."""

    positions: Positions
    environ: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    expanded: list[Expanded] = field(default_factory=list)

    def walk(self, value: Any, path: Path) -> Any:
        """``value`` with the strings in it interpolated (dicts and lists are copied)."""
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        return self._string(value, path)

    def _string(self, value: str, path: Path) -> str:
        """A string with ``${`` in it: expanded in an env field; elsewhere ``$${`` unescaped and ``${X}`` a problem."""
        if _env_field(path):
            return _ENV_OR_ESCAPE.sub(lambda match: self._reference(match, path), value)
        if any(m.group(0) != _ESCAPED for m in _ANY_REF.finditer(value)):
            self.problems.append(
                self.positions.problem(
                    path,
                    f"environment variables are expanded only in {_env_fields_text()}; "
                    "write $${X} for a literal ${X}",
                )
            )
            return value
        return value.replace(_ESCAPED, "${")

    def _reference(self, match: re.Match[str], path: Path) -> str:
        """What one ``${VAR}``, ``${VAR:-default}`` or ``$${`` in an env field at ``path`` becomes."""
        if match.group(0) == _ESCAPED:
            return "${"
        name, default = match.group(1), match.group(2)
        if name in self.environ:
            self.expanded.append(Expanded(path, name, self.environ[name]))
            return self.environ[name]
        if default is not None:
            return default
        self.problems.append(
            self.positions.problem(
                path, f"environment variable {name} is not set (write ${{{name}:-}} to make it optional)"
            )
        )
        return ""


def interpolate_env(
    data: Any, positions: Positions, env: Mapping[str, str] | None = None
) -> tuple[Any, list[Expanded]]:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in :data:`ENV_FIELDS`; ``$${`` is a literal ``${`` anywhere.

    Returns the data and what was expanded. A missing VAR, or a ``${`` outside
    :data:`ENV_FIELDS`, is a problem.
    """
    interpolation = _Interpolation(positions, os.environ if env is None else env)
    result = interpolation.walk(data, ())
    if interpolation.problems:
        raise SpecError(interpolation.problems)
    return result, interpolation.expanded


def scrub(problems: list[Problem], expanded: list[Expanded]) -> list[Problem]:
    """Replace every expanded value in ``problems`` by its ``${VAR}``: a secret is never echoed in an error."""
    out = []
    for problem in problems:
        message = problem.message
        for item in sorted(expanded, key=lambda e: -len(e.value)):
            own = problem.where == format_path(item.path)
            if item.value and (own or len(item.value) >= _MIN_SCRUBBED) and item.value in message:
                message = message.replace(item.value, f"${{{item.name}}}")
        out.append(replace_field(problem, message=message))
    return out
