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

import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import regex
from celpy import InterpretedRunner
from celpy.evaluation import Activation, Evaluator
from lark import Token, Tree

INPUT_KEYS = frozenset({"text", "id", "fields", "pii", "injection"})
RUN_KEYS = frozenset({"id", "pipeline", "version", "stage"})
ROOTS = frozenset({"input", "output", "run"})
_MACROS = frozenset({"exists", "all", "exists_one", "map", "filter"})
MAX_EVAL_STEPS = 200_000
MAX_EVAL_SECONDS = 1.0
# celpy logs the arguments of failing functions (document values) at ERROR level: keep them out of every log
logging.getLogger("celpy").setLevel(logging.CRITICAL + 1)


class RuleTooCostly(Exception):
    """A rule took more evaluation steps or time than one document may take; the message names the bound only."""


class _Budget:
    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_EVAL_SECONDS
        self.exceeded: str | None = None

    def step(self) -> None:
        self.steps += 1
        if self.exceeded is None and self.steps > MAX_EVAL_STEPS:
            self.exceeded = f"more than {MAX_EVAL_STEPS} evaluation steps"
        elif self.exceeded is None and self.steps % 256 == 0 and time.monotonic() > self.deadline:
            self.exceeded = f"longer than {MAX_EVAL_SECONDS} s"
        if self.exceeded is not None:  # raised again at every step, whatever celpy does with the first one
            raise RuleTooCostly(f"rule evaluation stopped: {self.exceeded}")


class _BoundedEvaluator(Evaluator):
    """celpy's evaluator, counting every node it visits (macros' nested evaluators share the budget)."""

    def __init__(self, ast: Tree[Any], activation: Activation, budget: _Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def visit_children(self, tree: Tree[Any]) -> list[Any]:
        self.budget.step()
        return super().visit_children(tree)

    def sub_evaluator(self, ast: Tree[Any]) -> Evaluator:
        return _BoundedEvaluator(ast, self.activation, self.budget)


class _BoundedRunner(InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        budget = _Budget()
        try:
            return _BoundedEvaluator(self.ast, self.new_activation(), budget).evaluate(context)
        except RecursionError:
            raise RuleTooCostly("rule evaluation stopped: nested too deeply") from None
        finally:
            if budget.exceeded is not None:  # celpy may have turned the stop into an ordinary error value
                raise RuleTooCostly(f"rule evaluation stopped: {budget.exceeded}")


@lru_cache(maxsize=1)
def _env() -> celpy.Environment:
    """The CEL environment, built at the first rule (celpy builds its parser then: 0.18 s a process)."""
    return celpy.Environment(runner_class=_BoundedRunner)


MATCH_TIMEOUT_S = 0.2


@lru_cache(maxsize=512)
def _pattern(source: str) -> regex.Pattern[str]:
    return regex.compile(source)


def _matches(text: Any, pattern: Any) -> Any:
    """CEL's ``matches`` with Python's ``regex`` (a superset of RE2's syntax) and a time limit.

    celpy's own uses google-re2, whose C++ logging prints a bad pattern to stderr: with a
    pattern built from a document (``input.text.matches(input.text)``) that is document text
    in the logs. Here a bad or too costly pattern is an error value that names no text.
    """
    try:
        return celpy.celtypes.BoolType(_pattern(str(pattern)).search(str(text), timeout=MATCH_TIMEOUT_S) is not None)
    except (regex.error, TimeoutError, OverflowError, RecursionError) as exc:
        return celpy.CELEvalError("matches: the pattern is invalid or too costly", type(exc), ())


MAX_RULE_CHARS = 4000
MAX_NESTING = 12
MAX_TREE_DEPTH = 150
MAX_MACRO_NESTING = 2
MAX_NUMBER_CHARS = 24


@dataclass(frozen=True)
class CelIssue:
    """A problem in a rule, at a 1-based line and column of the rule's text."""

    line: int
    column: int
    message: str


class CelRule:
    """A compiled rule.

    :meth:`evaluate` returns a Python value or raises ``celpy.CELEvalError`` or :class:`RuleTooCostly`.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._program = _env().program(_env().compile(source), functions={"matches": _matches})

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
        if (
            isinstance(ident, Tree)
            and ident.data == "ident"
            and ident.children
            and isinstance(ident.children[0], Token)
        ):
            return ident.children[0], attr
    return None


def _bracket_depth(source: str) -> tuple[int, int, int]:
    """Deepest bracket nesting outside string literals, and where it is first reached (line, column)."""
    depth = deepest = 0
    where = (1, 1)
    line, column, quote = 1, 0, ""
    for i, char in enumerate(source):
        column += 1
        if char == "\n":
            line, column = line + 1, 0
        if quote:
            if char == quote and source[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, (line, column)
        elif char in ")]}":
            depth -= 1
    return deepest, *where


def _tree_depth(tree: Tree[Any]) -> tuple[int, int]:
    """Depth of the parse tree and of nested macros (``x.map(y, y.map(...))``), walked without recursion."""
    deepest = macros = 0
    stack: list[tuple[Tree[Any], int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, nested = stack.pop()
        if _is_macro(node):
            nested += 1
        deepest, macros = max(deepest, depth), max(macros, nested)
        stack.extend((child, depth + 1, nested) for child in node.children if isinstance(child, Tree))
    return deepest, macros


def _is_macro(node: Tree[Any]) -> bool:
    return node.data == "member_dot_arg" and len(node.children) >= 2 and str(node.children[1]) in _MACROS


def size_issue(source: str) -> CelIssue | None:
    """A rule too long or nested too deeply to parse and evaluate safely (checked before parsing)."""
    if len(source) > MAX_RULE_CHARS:
        return CelIssue(1, 1, f"rule is longer than {MAX_RULE_CHARS} characters: split it into several checks")
    depth, line, column = _bracket_depth(source)
    if depth > MAX_NESTING:
        return CelIssue(line, column, f"rule is nested more than {MAX_NESTING} levels deep: simplify it")
    return None


def _shape_issues(tree: Tree[Any]) -> list[CelIssue]:
    """Bounds on the parsed rule: how deep it is, how deeply macros nest, how big its integers are."""
    issues = []
    depth, macros = _tree_depth(tree)
    if depth > MAX_TREE_DEPTH:  # before anything below recurses over the tree
        return [
            CelIssue(
                1,
                1,
                f"rule is too deeply nested ({depth} levels, at most {MAX_TREE_DEPTH}): split it into several checks",
            )
        ]
    if macros > MAX_MACRO_NESTING:
        issues.append(
            CelIssue(
                1,
                1,
                f"macros (map, filter, exists, all) nest {macros} deep, at most {MAX_MACRO_NESTING}: "
                "nested macros multiply the work per document",
            )
        )
    for token in tree.scan_values(lambda v: isinstance(v, Token) and v.type in ("INT_LIT", "UINT_LIT", "FLOAT_LIT")):
        if len(str(token)) > MAX_NUMBER_CHARS:
            issues.append(
                CelIssue(
                    token.line or 1,
                    token.column or 1,
                    f"number with {len(str(token))} characters: CEL numbers are 64-bit",
                )
            )
    return issues


def check_rule(source: str, output_fields: set[str]) -> list[CelIssue]:
    """Parse ``source`` and check every name it uses; an empty list means the rule is fine."""
    too_big = size_issue(source)
    if too_big is not None:
        return [too_big]
    try:
        tree = _env().compile(source)
    except celpy.CELParseError as exc:
        line, column = getattr(exc, "line", None) or 1, getattr(exc, "column", None) or 1
        return [CelIssue(line, column, "rule does not parse as CEL: check operators (&&, ||, ==) and quotes")]
    except RecursionError:  # the bounds above should make this unreachable; never a traceback
        return [CelIssue(1, 1, "rule is too deeply nested: simplify it")]
    issues = _shape_issues(tree)
    if issues:
        return issues
    for token in tree.scan_values(lambda v: isinstance(v, Token) and v.type == "STRING_LIT"):
        if str(token)[:1] not in "rR" and re.search(r"(?<!\\)(?:\\\\)*\\[bfv]", str(token)):
            # a regex written as in Python: in CEL (and in YAML "..."), \b is a backspace, not a word boundary
            issues.append(
                CelIssue(
                    token.line or 1,
                    token.column or 1,
                    "'\\b' in a CEL string is a backspace, not a word boundary: write a raw string r'...' or '\\\\b'",
                )
            )
    bound = _bound_names(tree)
    for node in tree.iter_subtrees():
        if node.data == "ident" and node.children and isinstance(node.children[0], Token):
            name = node.children[0]
            if str(name) not in ROOTS and str(name) not in bound:
                issues.append(
                    CelIssue(
                        name.line or 1, name.column or 1, f"unknown name '{name}' (a rule sees input, output and run)"
                    )
                )
        pair = _root_member(node)
        if pair is None:
            continue
        root, attr = pair
        allowed = {"output": output_fields, "input": INPUT_KEYS, "run": RUN_KEYS}.get(str(root))
        if allowed is not None and str(attr) not in allowed:
            from steadyflow.core.names import did_you_mean

            hint = did_you_mean(str(attr), sorted(allowed)) or f" ({root} has: {', '.join(sorted(allowed))})"
            issues.append(CelIssue(attr.line or 1, attr.column or 1, f"unknown field '{root}.{attr}'{hint}"))
    return issues
