"""steadyflow: declarative AI pipelines that keep working when the model does not.

The Python API (see :mod:`steadyflow.api`)::

    pipeline = steadyflow.load("pipeline.yaml")
    summary = pipeline.run(input="inbox/")           # a Prefect flow; a subflow inside yours
    result = await pipeline.process("ticket text")   # one document, no Prefect

Plugin registries: ``@steadyflow.validator(name)``, ``@steadyflow.estimator(name)``, ``@steadyflow.stage(name)``.

Every name here is imported on first use, so ``import steadyflow`` stays cheap: no pydantic
models, no Prefect, no model clients until they are asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steadyflow.api import Pipeline, Processed, load
    from steadyflow.stages.routing import estimator
    from steadyflow.validators.base import validator

__version__ = "0.1.0"

_LAZY = {
    "load": "steadyflow.api",
    "Pipeline": "steadyflow.api",
    "Processed": "steadyflow.api",
    "validator": "steadyflow.validators.base",
    "estimator": "steadyflow.stages.routing",
    "stage": "steadyflow.stages.kinds",
}

__all__ = ["Pipeline", "Processed", "__version__", "estimator", "load", "stage", "validator"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steadyflow' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a module the registry needs is missing: that is the error to see
            raise
        raise AttributeError(f"module 'steadyflow' has no attribute {name!r} (no {module})") from None
    globals()[name] = value  # once: the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
