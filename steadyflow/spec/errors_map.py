"""Turn pydantic validation errors into :class:`Problem` lines that point into the file."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from steadyflow.core.names import did_you_mean
from steadyflow.spec import models as m
from steadyflow.spec import resilience as r
from steadyflow.spec import validation as v
from steadyflow.spec.errors import Problem
from steadyflow.spec.yaml_positions import Path, Positions

_DSL_MODELS: list[type[BaseModel]] = [
    m.Pipeline,
    m.ModelSpec,
    m.Price,
    m.FilesSource,
    m.TableSource,
    m.FileSink,
    m.SqlSink,
    m.InputSpec,
    m.PromptSpec,
    m.FieldSpec,
    m.FieldRule,
    m.RulesSpec,
    m.ModelRung,
    m.RulesRung,
    m.DefaultRung,
    m.AiStage,
    m.RulesStage,
    m.PluginStage,
    m.RunSettings,
    *v.BUILTIN.values(),
    v.PluginCheck,
    r.BreakerSpec,
    r.Limit,
    r.BudgetSpec,
    r.RouteSpec,
    r.CacheRung,
]
_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _tag(value: dict[str, Any]) -> Any:
    """The union tag pydantic puts in an error's loc for this mapping (stage kind, check name, rung kind)."""
    if "kind" in value:
        return value.get("kind")
    return v._which(value) if "check" in value else m._rung_kind(value)


def _locate(data: Any, loc: tuple[Any, ...]) -> tuple[Path, Any]:
    """Follow a pydantic ``loc`` through the raw data, skipping union tags."""
    path: list[str | int] = []
    current = data
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if isinstance(current, dict):
            tag = _tag(current)
            if part == tag and (part not in current or (parts and parts[0] in current)):
                continue
            if part in current:
                path.append(part)
                current = current[part]
                continue
            if isinstance(part, str) and parts:
                continue  # a union member name such as 'RulesSpec'
            path.append(part)
            return tuple(path), None
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
            continue
        break  # the rest of loc names union members of a scalar
    return tuple(path), current


def _keys(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _allowed_keys(siblings: set[str]) -> set[str]:
    candidates = [_keys(model) for model in _DSL_MODELS if siblings <= _keys(model)]
    if not candidates:
        candidates = [_keys(model) for model in _DSL_MODELS]
    return set().union(*candidates)


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _message(err: dict[str, Any], path: Path, value: Any, data: Any) -> tuple[str, bool]:
    """Return (message, points_at_key)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("extra_forbidden", "missing") and not path:
        return str(err["msg"]).lower(), False
    if kind == "extra_forbidden":
        key = str(path[-1])
        parent = _locate(data, path[:-1])[1]
        siblings = {k for k in parent if k != key} if isinstance(parent, dict) else set()
        return f"unknown key '{key}'{did_you_mean(key, _allowed_keys(siblings))}", True
    if kind == "missing":
        return f"missing required key '{path[-1]}'", False
    if kind == "literal_error":
        expected = _quoted(str(ctx.get("expected", "")))
        return f"'{value}' is not one of {', '.join(expected)}{did_you_mean(str(value), expected)}", False
    discriminator = str(ctx.get("discriminator", "'kind'"))
    if discriminator.endswith("()"):  # a function picks the member (stage kinds): it reads the 'kind' key
        discriminator = "'kind'"
    if kind == "union_tag_invalid":
        tags = _quoted(str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag")
        hint = did_you_mean(str(tag), tags) or f" (expected {', '.join(tags)})"
        return f"unknown {discriminator.strip(chr(39))} '{tag}'{hint}", False
    if kind == "union_tag_not_found":
        return f"missing required key {discriminator}", False
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {type(value).__name__ if value is not None else 'nothing'}", False
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:], False


def validation_problems(exc: ValidationError, data: Any, positions: Positions) -> list[Problem]:
    """One problem per distinct location; wrong-type errors of union branches are merged."""
    by_path: dict[Path, list[tuple[str, bool, str]]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "missing":
            path, value = _locate(data, loc[:-1])
            path = (*path, loc[-1])
        else:
            path, value = _locate(data, loc)
        message, at_key = _message(dict(err), path, value, data)
        by_path.setdefault(path, []).append((message, at_key, err["type"]))
    problems = []
    # every proper prefix of a located path, once: testing each path against all others was quadratic
    # (2,000 stages with a problem each took seconds here)
    prefixes = {other[:end] for other in by_path for end in range(len(other))}
    for path, items in by_path.items():
        deeper = path in prefixes
        specific = [it for it in items if it[2] not in _TYPE_WORDS]
        if deeper and not specific:
            continue  # a union branch that did not apply; the deeper error explains it
        chosen = specific or items
        if not specific and len(items) > 1:
            words = sorted({_TYPE_WORDS[it[2]] for it in items})
            got = items[0][0].rsplit(", got ", 1)[-1]
            chosen = [(f"expected {' or '.join(words)}, got {got}", False, "type")]
        for message, at_key, _ in dict.fromkeys(chosen):
            problems.append(positions.problem(path, message, key=at_key or path not in positions.values))
    return problems
