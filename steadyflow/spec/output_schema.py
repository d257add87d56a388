"""Compile a stage's declared output fields into a pydantic response model."""

from __future__ import annotations

import importlib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic_core import SchemaError

from steadyflow.spec.models import FieldSpec


class OutputBase(BaseModel):
    """Base of every compiled output model: no extra keys may leave a stage."""

    model_config = ConfigDict(extra="forbid")


def _class_name(stage_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", stage_id) if part) or "Output"


def _python_type(name: str, spec: FieldSpec, owner: str) -> Any:
    if spec.type == "string":
        return Annotated[str, Field(min_length=spec.min_length, max_length=spec.max_length, pattern=spec.pattern)]
    if spec.type == "integer":
        return Annotated[int, Field(ge=spec.minimum, le=spec.maximum)]
    if spec.type == "number":
        return Annotated[float, Field(ge=spec.minimum, le=spec.maximum)]
    if spec.type == "boolean":
        return bool
    if spec.type == "enum":
        return Literal[tuple(spec.enum or ())]
    if spec.type == "list":
        if spec.items is None:  # guarded by FieldSpec; keeps mypy honest
            raise ValueError(f"list field '{name}' has no items")
        inner = _python_type(name, spec.items, owner)
        return Annotated[list[inner], Field(min_length=spec.min_items, max_length=spec.max_items)]  # type: ignore[valid-type]
    if spec.type == "object":
        return compile_output(spec.fields or {}, f"{owner}{_class_name(name)}")
    raise ValueError(f"unknown field type {spec.type!r}")


def field_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an output field, or None.

    pydantic turns ``_x`` into a private attribute (the field silently disappears)
    and ``model_config``, ``model_dump``, ``json``... collide with its own members.
    """
    if name.startswith("_"):
        return (
            f"output field '{name}' starts with '_', which pydantic treats as private: "
            f"rename it, e.g. '{name.lstrip('_') or 'value'}'"
        )
    if name.startswith("model_") or hasattr(BaseModel, name):
        return f"output field '{name}' is a reserved name of pydantic models: rename it, e.g. '{name}_value'"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why the validator's regex engine refuses ``pattern``.

    The engine is pydantic's Rust regex: linear time, no look-around or backreferences.
    """
    try:
        TypeAdapter(Annotated[str, Field(pattern=pattern)])
    except SchemaError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else "invalid"
        if "not supported" in reason:
            return (
                f"pattern uses a construct the output validator's regex engine does not support (Rust regex): {reason}"
            )
        return f"pattern does not compile: {reason}"
    return None


def compile_output(fields: dict[str, FieldSpec], name: str) -> type[BaseModel]:
    """Build a pydantic model class from declared fields (recursively for objects)."""
    definitions: dict[str, Any] = {}
    for field_name, spec in fields.items():
        problem = field_name_problem(field_name)
        if problem is not None:  # checks.py reports it with a position; this keeps other callers safe
            raise ValueError(problem)
        annotation = _python_type(field_name, spec, name)
        if spec.optional:
            definitions[field_name] = (annotation | None, Field(None, description=spec.description))
        else:
            definitions[field_name] = (annotation, Field(..., description=spec.description))
    return create_model(_class_name(name), __base__=OutputBase, **definitions)


def import_model(dotted: str) -> type[BaseModel]:
    """Import ``'package.module:Class'`` and check it is a pydantic model.

    A pipeline file that names Python code is code, and is trusted as such.
    """
    module_name, _, attr = dotted.partition(":")
    if not module_name or not attr:
        raise ValueError(f"'{dotted}' is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}': {exc}") from None
    value = getattr(module, attr, None)
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise ValueError(f"'{dotted}' is not a pydantic model class")
    return value


def schema_options(prop: Any) -> list[dict[str, Any]]:
    """A property's JSON schema and, for an optional field, each of its ``anyOf`` alternatives."""
    if not isinstance(prop, dict):
        return []
    return [option for option in [prop, *prop.get("anyOf", [])] if isinstance(option, dict)]


def takes_confidence(prop: Any) -> bool:
    """An enum or boolean field: what a model answer's confidence is computed for."""
    return any("enum" in option or option.get("type") == "boolean" for option in schema_options(prop))
