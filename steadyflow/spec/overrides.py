"""``--set dotted.key=value`` overrides and ``${ENV}`` interpolation on raw YAML data.

Both run before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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
        raise SpecError([Problem(_set_source(index), 1, 1, format_path(walked), f"no list item '{segment}' (give an index or a stage id)")])
    if isinstance(current, dict):
        return current, segment
    raise SpecError([Problem(_set_source(index), 1, 1, format_path(walked), f"'{format_path(walked)}' is a value, not a mapping")])


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


def interpolate_env(data: Any, positions: Positions, env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; a missing VAR is a problem."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(positions.problem(path, f"environment variable {name} is not set (write ${{{name}:-}} to make it optional)"))
            return ""

        return _ENV.sub(replace, value)

    result = walk(data, ())
    if problems:
        raise SpecError(problems)
    return result
