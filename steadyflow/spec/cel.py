"""Business rules in the Common Expression Language (CEL), checked before anything runs.

CEL (https://cel.dev) is small, side-effect free and not Turing-complete: an
expression reads the values it is given and returns one value; it cannot loop
forever, import, call out or execute anything. Documents are only ever *data*
in its activation, never part of an expression. cel-python evaluates it.

A rule sees three variables:

- ``input``: ``text`` (what the model saw), ``id``, ``fields`` (the document's
  fields), ``pii`` (entity types redacted from it), ``injection`` (signs found);
- ``output``: the stage's output fields;
- ``run``: ``id``, ``pipeline``, ``version``, ``stage``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import celpy
from lark import Token, Tree

INPUT_KEYS = frozenset({"text", "id", "fields", "pii", "injection"})
RUN_KEYS = frozenset({"id", "pipeline", "version", "stage"})
ROOTS = frozenset({"input", "output", "run"})
_MACROS = frozenset({"exists", "all", "exists_one", "map", "filter"})
_ENV = celpy.Environment()


@dataclass(frozen=True)
class CelIssue:
    """A problem in a rule, at a 1-based line and column of the rule's text."""

    line: int
    column: int
    message: str


class CelRule:
    """A compiled rule; :meth:`evaluate` returns a Python value or raises ``celpy.CELEvalError``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._program = _ENV.program(_ENV.compile(source))

    def evaluate(self, activation: dict[str, Any]) -> Any:
        """Evaluate against plain JSON-like data."""
        result = self._program.evaluate({name: celpy.json_to_cel(value) for name, value in activation.items()})
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result


def _bound_names(tree: Tree[Any]) -> set[str]:
    """Variables that macros such as ``list.exists(x, ...)`` bind."""
    bound = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg" and len(node.children) >= 3:
            method, args = node.children[1], node.children[2]
            if isinstance(method, Token) and str(method) in _MACROS and isinstance(args, Tree) and args.children:
                first = args.children[0]
                idents = [t for t in first.scan_values(lambda v: isinstance(v, Token) and v.type == "IDENT")]
                if len(idents) == 1:
                    bound.add(str(idents[0]))
    return bound


def _root_member(node: Tree[Any]) -> tuple[Token, Token] | None:
    """For ``root.attr`` return the two tokens, else None."""
    if node.data != "member_dot" or len(node.children) != 2:
        return None
    inner, attr = node.children
    if not (isinstance(inner, Tree) and inner.data == "member" and isinstance(attr, Token)):
        return None
    primary = inner.children[0] if inner.children else None
    if isinstance(primary, Tree) and primary.data == "primary" and primary.children:
        ident = primary.children[0]
        if isinstance(ident, Tree) and ident.data == "ident" and ident.children and isinstance(ident.children[0], Token):
            return ident.children[0], attr
    return None


def check_rule(source: str, output_fields: set[str]) -> list[CelIssue]:
    """Parse ``source`` and check every name it uses; an empty list means the rule is fine."""
    try:
        tree = _ENV.compile(source)
    except celpy.CELParseError as exc:
        line, column = getattr(exc, "line", None) or 1, getattr(exc, "column", None) or 1
        return [CelIssue(line, column, "rule does not parse as CEL: check operators (&&, ||, ==) and quotes")]
    issues = []
    for token in tree.scan_values(lambda v: isinstance(v, Token) and v.type == "STRING_LIT"):
        if str(token)[:1] not in "rR" and re.search(r"(?<!\\)(?:\\\\)*\\[bfv]", str(token)):
            # a regex written as in Python: in CEL (and in YAML "..."), \b is a backspace, not a word boundary
            issues.append(CelIssue(token.line or 1, token.column or 1,
                                   "'\\b' in a CEL string is a backspace, not a word boundary: write a raw string r'...' or '\\\\b'"))
    bound = _bound_names(tree)
    for node in tree.iter_subtrees():
        if node.data == "ident" and node.children and isinstance(node.children[0], Token):
            name = node.children[0]
            if str(name) not in ROOTS and str(name) not in bound:
                issues.append(CelIssue(name.line or 1, name.column or 1, f"unknown name '{name}' (a rule sees input, output and run)"))
        pair = _root_member(node)
        if pair is None:
            continue
        root, attr = pair
        allowed = {"output": output_fields, "input": INPUT_KEYS, "run": RUN_KEYS}.get(str(root))
        if allowed is not None and str(attr) not in allowed:
            from steadyflow.spec.errors import did_you_mean

            hint = did_you_mean(str(attr), sorted(allowed)) or f" ({root} has: {', '.join(sorted(allowed))})"
            issues.append(CelIssue(attr.line or 1, attr.column or 1, f"unknown field '{root}.{attr}'{hint}"))
    return issues
