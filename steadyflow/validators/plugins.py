"""Loading a pipeline's plugin modules and checking that every ``check:`` it names exists."""

from __future__ import annotations

import importlib
import sys

from steadyflow.spec.errors import Problem
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import PluginStage
from steadyflow.spec.validation import BUILTIN, PluginCheck
from steadyflow.validators.base import CHECKS


def load_plugins(pipeline: LoadedPipeline) -> list[Problem]:
    """Import the pipeline's ``plugins:`` modules (its folder first on the path); problems for those that fail."""
    problems = []
    folder = str(pipeline.base_dir)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for i, module in enumerate(pipeline.spec.plugins):
        try:
            importlib.import_module(module)
        except Exception as exc:  # the pipeline author's module: report, do not crash validate
            problems.append(
                pipeline.positions.problem(
                    ("plugins", i), f"plugin module '{module}' cannot be imported: {type(exc).__name__}: {exc}"
                )
            )
    return problems


def names_code(pipeline: LoadedPipeline) -> bool:
    """Whether the pipeline names Python code: plugin modules, plugin checks, stage kinds or an ``output_model``."""
    return bool(pipeline.spec.plugins) or any(
        stage.output_model or isinstance(stage, PluginStage) or any(isinstance(c, PluginCheck) for c in stage.validate_)
        for stage in pipeline.spec.stages
    )


def plugin_problems(pipeline: LoadedPipeline, *, import_plugins: bool = True) -> list[Problem]:
    """Load plugins, then one problem per ``check:`` that is neither built in nor registered.

    ``import_plugins=False`` imports nothing (plugins are code and run when imported):
    plugin checks are then not verified at all, so none is reported as unknown.
    """
    if not import_plugins:
        return []
    problems = load_plugins(pipeline)
    for i, stage in enumerate(pipeline.spec.stages):  # every stage kind runs its checks
        for j, check in enumerate(stage.validate_):
            if isinstance(check, PluginCheck) and check.check not in CHECKS:
                where = ("stages", i, "validate", j, "check")
                problems.append(pipeline.positions.problem(where, CHECKS.unknown(check.check, also=tuple(BUILTIN))))
    return problems
