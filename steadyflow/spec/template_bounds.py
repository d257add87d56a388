"""Time and memory bounds for prompt templates.

Templates are written by the pipeline author, but they run once per document
with document values, and Jinja will happily compute ``'x' * 3000000000`` or
loop ten billion times. The sandbox here refuses what would be too big
*before* it is built (multiplications, powers, padding widths, replacements),
counts loop iterations, checks a deadline, and :func:`render_bounded` stops
once the output passes a size bound. Every refusal is a
:class:`PromptTooCostly`, a ``jinja2.TemplateError``, so the engine
quarantines that one document with a reason and the batch goes on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_RENDER_CHARS = 2_000_000
"""A rendered prompt (and anything a template builds on the way) is at most this many characters."""
MAX_LOOP_STEPS = 1_000_000
MAX_RENDER_SECONDS = 2.0
MAX_POWER_BITS = 4096
_BUDGET = "steadyflow budget"  # a context key no template can name (it has a space)
_LOOP_FILTER = "steadyflow_loop_budget"
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\d+)?(?:\.(\d+))?|\{[^{}]*?:[^{}]*?(\d+)")


class PromptTooCostly(jinja2.TemplateError):
    """A template asked for more memory or time than a prompt may take; the message names the construct only."""


@dataclass
class Budget:
    """What one rendering may still spend."""

    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_RENDER_SECONDS)
    steps: int = 0

    def step(self) -> None:
        """Count one loop iteration and check the deadline."""
        self.steps += 1
        if self.steps > MAX_LOOP_STEPS:
            raise PromptTooCostly(f"template loops ran more than {MAX_LOOP_STEPS} iterations")
        if self.steps % 1024 == 0:
            self.check_time()

    def check_time(self) -> None:
        """Refuse to go on past the deadline."""
        if time.monotonic() > self.deadline:
            raise PromptTooCostly(f"template took longer than {MAX_RENDER_SECONDS} s to render")


def weight(value: Any, limit: int = MAX_RENDER_CHARS) -> int:
    """Characters ``value`` takes once printed, roughly.

    Stops counting past ``limit`` (shared items count each time).
    """
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, list | tuple | dict):
        return 8
    total, stack, seen = 2, [value], 0
    while stack and total <= limit:
        item = stack.pop()
        items = list(item.items()) if isinstance(item, dict) else item
        for child in items:
            seen += 1
            if isinstance(child, list | tuple | dict):
                stack.append(child)
            else:
                total += (len(child) if isinstance(child, str | bytes) else 8) + 2
            if total > limit or seen > limit:
                return limit + 1
    return total


def _refuse_if_big(what: str, size: int) -> None:
    if size > MAX_RENDER_CHARS:
        raise PromptTooCostly(f"{what} would build about {size} characters (at most {MAX_RENDER_CHARS})")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Raise :class:`PromptTooCostly` when ``left operator right`` would be too big to build."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(times, int) and not isinstance(times, bool) and isinstance(seq, str | list | tuple):
                _refuse_if_big("'*'", weight(seq) * max(times, 0))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1 and max(abs(left).bit_length() - 1, 1) * right > MAX_POWER_BITS:
            raise PromptTooCostly(f"'**' would build a number of more than {MAX_POWER_BITS} bits")
    elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _refuse_if_big("'+'", weight(left) + weight(right))
    elif operator == "%" and isinstance(left, str):
        check_format(left, right if isinstance(right, tuple) else (right,))


def check_format(text: str, args: Iterable[Any]) -> None:
    """Refuse a format string (or arguments) with a padding width or precision past the bound."""
    for match in _FORMAT_WIDTH.finditer(text):
        for number in filter(None, match.groups()):
            # the length test first: int() of thousands of digits is itself refused by Python
            if len(number) > 7 or int(number) > MAX_RENDER_CHARS:
                raise PromptTooCostly(f"format width {number[:12]} is larger than {MAX_RENDER_CHARS}")
    check_args(args)


def check_args(args: Iterable[Any]) -> None:
    """Refuse an integer argument (a width, a count) larger than the output may be."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_RENDER_CHARS:
            raise PromptTooCostly(
                f"argument {arg if abs(arg) < 10**30 else 'with many digits'} is larger than {MAX_RENDER_CHARS}"
            )


def check_replace(text: Any, old: Any, new: Any) -> None:
    """Refuse a replacement whose result would be too big (``'x'*100000 | replace('x', 'y'*100000)``)."""
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        _refuse_if_big("replace", len(text) + hits * (len(new) - len(old)))


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(*passed: Any, **kwargs: Any) -> Any:
        # filters marked pass_context/pass_eval_context/pass_environment get that object first
        args = passed[1:] if passed and isinstance(passed[0], EvalContext | Context | jinja2.Environment) else passed
        check_args([*args[1:], *kwargs.values()])
        if name == "replace" and len(args) >= 3:
            check_replace(args[0], args[1], args[2])
        if name == "format" and args and isinstance(args[0], str):
            check_format(args[0], [*args[1:], *kwargs.values()])
        if name == "join" and args:
            sep = args[1] if len(args) > 1 else kwargs.get("d", "")
            items = args[0] if isinstance(args[0], list | tuple | str) else []
            _refuse_if_big("join", weight(items) + weight(sep) * len(items))
        return original(*passed, **kwargs)

    bounded.__dict__.update(original.__dict__)  # keeps jinja's pass_context/pass_environment markers
    return bounded


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox with size checks on operators, calls and filters, and a budget on loops."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in (
            "center",
            "indent",
            "replace",
            "format",
            "wordwrap",
            "truncate",
            "join",
            "batch",
            "slice",
            "round",
        ):
            self.filters[name] = _bounded_filter(name, self.filters[name])
        self.filters[_LOOP_FILTER] = _loop_budget

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse results that would be too big before computing them."""
        check_binop(operator, left, right)
        _budget(context).check_time()
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # jinja's own signature
        """Refuse huge widths and counts (``'x'.center(10**9)``, ``range``) before calling."""
        check_args([*args, *kwargs.values()])
        if getattr(__obj, "__name__", "") == "replace" and len(args) >= 2:
            check_replace(getattr(__obj, "__self__", None), args[0], args[1])
        _budget(__context).check_time()
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'{:>999999999}'.format(x)``: check the format string when the method is looked up."""
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            check_format(owner, [])
        return super().wrap_str_format(value)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # every `for` iterates through the loop budget, so even a loop that prints nothing is bounded
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        return tree


def _budget(context: Context) -> Budget:
    found = context.get(_BUDGET)
    return found if isinstance(found, Budget) else Budget()


@jinja2.pass_context
def _loop_budget(context: Context, iterable: Any) -> Iterator[Any]:
    budget = _budget(context)
    for item in iterable:
        budget.step()
        yield item


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render with a fresh :class:`Budget`, streaming, and stop once the output passes :data:`MAX_RENDER_CHARS`.

    Any failure of the template for this document is a ``jinja2.TemplateError``
    whose message names no document value (a ``ZeroDivisionError`` from ``1/0``
    included), so the caller can quarantine the document and go on.
    """
    budget = Budget()
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**context, **{_BUDGET: budget}):
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                raise PromptTooCostly(f"rendered prompt is longer than {MAX_RENDER_CHARS} characters")
            parts.append(chunk)
            budget.check_time()
    except jinja2.TemplateError:
        raise
    except Exception as exc:  # RecursionError, MemoryError, ZeroDivisionError...: this document fails, not the batch
        raise PromptTooCostly(f"template failed for this document: {type(exc).__name__}") from None
    return "".join(parts)


_BINOPS: dict[type[nodes.BinExpr], Callable[[Any, Any], Any]] = {
    nodes.Mul: lambda a, b: a * b,
    nodes.Pow: lambda a, b: a**b,
    nodes.Add: lambda a, b: a + b,
    nodes.Mod: lambda a, b: a % b,
}


def _constant(node: nodes.Node) -> Any:
    """The value of a constant expression, checked like at run time; ``nodes.Impossible`` when it is not constant."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_constant(item) for item in node.items]
    if type(node) in _BINOPS and isinstance(node, nodes.BinExpr):
        left, right = _constant(node.left), _constant(node.right)
        check_binop(node.operator, left, right)
        try:
            return _BINOPS[type(node)](left, right)
        except Exception:  # 1 + 'a': not for this check to judge
            raise nodes.Impossible() from None
    raise nodes.Impossible()


def static_problem(tree: nodes.Template) -> tuple[int, str] | None:
    """``(line, message)`` for a constant expression that is certain to be too big (``{{ 'x' * 3000000000 }}``)."""
    for node in tree.find_all((nodes.BinExpr, nodes.Call, nodes.Filter)):
        try:
            if isinstance(node, nodes.BinExpr):
                _constant(node)
            elif isinstance(node, nodes.Call | nodes.Filter):
                check_args(_constant(arg) for arg in node.args if isinstance(arg, nodes.Const))
        except nodes.Impossible:
            continue
        except PromptTooCostly as exc:
            return node.lineno or 1, f"prompt template is too costly: {exc}"
    return None
