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
MAX_DEPTH = 64
"""Nesting deeper than this is refused before anything recurses (PyYAML's composer and our builder do)."""
MAX_EXPANDED_CHARS = 2 * MAX_FILE_BYTES
"""Total characters of the scalars built, aliases counted each time they are used (string alias bombs)."""
MAX_INT_DIGITS = 64
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap"}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


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


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than :data:`MAX_DEPTH` (it recurses once per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Builder:
    """Builds plain values from the node graph, counting what aliases expand to.

    An alias is built again each time it is used, so ``count`` and ``chars`` measure
    the *expanded* document: merge keys (``<<``) and repeated big scalars included.
    """

    def __init__(self, file: str) -> None:
        self.positions = Positions(file)
        self.constructor = yaml.SafeLoader("")
        self.count = 0
        self.chars = 0

    def build(self, node: yaml.Node, path: Path, *, record: bool = True, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError([self._at(node, (), f"document expands to more than {MAX_NODES} values (alias bomb?)")])
        if depth > MAX_DEPTH:  # aliases can nest deeper than the text does
            raise SpecError([self._at(node, path[:4], f"nested more than {MAX_DEPTH} levels deep")])
        if record:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
                line, col = line + 1, 1  # a block scalar's text starts on the line after its indicator
            self.positions.values[path] = (line, col)
        if node.tag not in _PLAIN_TAGS and not isinstance(node, yaml.ScalarNode):
            # we build collections ourselves, so a tag such as !!python/object would be ignored: refuse it
            raise SpecError([self._at(node, path, f"unsafe or unknown YAML tag refused: {node.tag}")])
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth=depth + 1) for i, child in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        self.chars += len(node.value)
        if self.chars > MAX_EXPANDED_CHARS:
            raise SpecError(
                [self._at(node, path, f"document expands to more than {MAX_EXPANDED_CHARS} characters (alias bomb?)")]
            )
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
            raise SpecError(
                [self._at(node, path, f"integer with {len(node.value)} digits: at most {MAX_INT_DIGITS} are allowed")]
            )
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise SpecError([self._at(node, path, _yaml_message(exc))]) from None
        except (ValueError, OverflowError) as exc:  # e.g. a date out of range
            raise SpecError([self._at(node, path, f"invalid value: {type(exc).__name__}")]) from None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, path, merged, depth)
                continue
            key = self.build(key_node, path, record=False, depth=depth + 1)
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError([self._at(key_node, path, "mapping keys must be plain scalars")])
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise SpecError([self._at(key_node, (*path, key), f"duplicate key '{key}'")])
            self.positions.keys[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, (*path, key), depth=depth + 1)
        # YAML merge keys: the mapping's own keys override merged ones (the usual `<<: *common` then overrides)
        return {**{k: v for k, v in merged.items() if k not in out}, **out} if merged else out

    def _merge(self, value_node: yaml.Node, path: Path, merged: dict[str, Any], depth: int) -> None:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise SpecError([self._at(source, path, "a merge key (<<) takes a mapping or a list of mappings")])
            # built like any other value, so every merged entry counts towards the expansion bounds
            for key, value in self._mapping(source, path, depth + 1).items():
                merged.setdefault(key, value)  # earlier sources win, as the YAML merge spec says

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


_CLoader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _compose(text: str) -> yaml.Node | None:
    """The node graph of ``text``: libyaml when present (the pure-Python scanner took seconds on big files)."""
    yaml.reader.Reader(text)  # refuses control characters, as the pure-Python loader always did
    if _CLoader is None:
        pure = _Loader(text)
        try:
            return pure.get_single_node()
        finally:
            pure.dispose()
    # libyaml's composer recurses in C: measure the nesting from the (flat) event stream first
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        if isinstance(event, _OPENS):
            depth += 1
            if depth > MAX_DEPTH:
                start = event.start_mark
                mark = yaml.error.Mark("", 0, start.line, start.column, "", 0) if start is not None else None
                raise _TooDeep(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
        elif isinstance(event, _CLOSES):
            depth -= 1
    loader = _CLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def load_yaml(text: str, file: str) -> tuple[Any, Positions]:
    """Parse YAML ``text`` safely; return the data and its positions.

    Raises :class:`SpecError` (never a YAML or Python error) on any problem.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise SpecError([Problem(file, 1, 1, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = str(exc.problem) if isinstance(exc, _TooDeep) else _yaml_message(exc)
        raise SpecError([Problem(file, line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 1, 1, "", _yaml_message(exc))]) from None
    builder = _Builder(file)
    if node is None:
        return None, builder.positions
    data = builder.build(node, ())
    return data, builder.positions
