"""The DSL: pipeline file models, YAML loading with positions, JSON Schema export.

The names below load on first use: ``steadyflow.spec.errors`` (what the CLI needs for
``--help``) must not build every pydantic model of the DSL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steadyflow.spec.errors import Problem, SpecError
    from steadyflow.spec.loader import CompiledStage, LoadedPipeline, load_pipeline
    from steadyflow.spec.models import Pipeline

_LAZY = {
    "Problem": "steadyflow.spec.errors",
    "SpecError": "steadyflow.spec.errors",
    "CompiledStage": "steadyflow.spec.loader",
    "LoadedPipeline": "steadyflow.spec.loader",
    "load_pipeline": "steadyflow.spec.loader",
    "Pipeline": "steadyflow.spec.models",
}

__all__ = ["CompiledStage", "LoadedPipeline", "Pipeline", "Problem", "SpecError", "load_pipeline"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'steadyflow.spec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
