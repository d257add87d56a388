"""Safe YAML loading that remembers where every value came from.

PyYAML's ``SafeLoader`` composes the node graph (no python tags, no code);
we construct plain Python values from it ourselves so that we can record the
line and column of every key and value, refuse duplicate keys, and stop alias
expansion ("billion laughs") before it eats the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from steadyflow.spec.errors import Problem, SpecError, format_path

Path = tuple[str | int, ...]

MAX_FILE_BYTES = 2_000_000
MAX_NODES = 200_000
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap"}


@dataclass
class Positions:
    """Map from a data path to the (line, col) of its value, 1-based."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def find(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of the longest known prefix of ``path``."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if key and prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return (1, 1)

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` in this file."""
        line, col = self.find(path, key=key)
        return Problem(self.file, line, col, format_path(path), message)


class _Builder:
    def __init__(self, file: str) -> None:
        self.positions = Positions(file)
        self.constructor = yaml.SafeLoader("")
        self.count = 0

    def build(self, node: yaml.Node, path: Path, *, record: bool = True) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError([self._at(node, (), f"document expands to more than {MAX_NODES} values (alias bomb?)")])
        if record:
            self.positions.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if node.tag not in _PLAIN_TAGS and not isinstance(node, yaml.ScalarNode):
            # we build collections ourselves, so a tag such as !!python/object would be ignored: refuse it
            raise SpecError([self._at(node, path, f"unsafe or unknown YAML tag refused: {node.tag}")])
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise SpecError([self._at(node, path, _yaml_message(exc))]) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        self.constructor.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.build(key_node, path, record=False)
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError([self._at(key_node, path, "mapping keys must be plain scalars")])
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise SpecError([self._at(key_node, (*path, key), f"duplicate key '{key}'")])
            self.positions.keys[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, (*path, key))
        return out

    def _at(self, node: yaml.Node, path: Path, message: str) -> Problem:
        mark = node.start_mark
        return Problem(self.positions.file, mark.line + 1, mark.column + 1, format_path(path), message)


def _yaml_message(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if "python/" in str(exc) or "could not determine a constructor" in str(exc):
        return f"unsafe or unknown YAML tag refused: {problem}"
    return f"invalid YAML: {text}"


def load_yaml(text: str, file: str) -> tuple[Any, Positions]:
    """Parse YAML ``text`` safely; return the data and its positions.

    Raises :class:`SpecError` (never a YAML or Python error) on any problem.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise SpecError([Problem(file, 1, 1, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError([Problem(file, line, col, "", _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 1, 1, "", _yaml_message(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    builder = _Builder(file)
    if node is None:
        return None, builder.positions
    data = builder.build(node, ())
    return data, builder.positions
