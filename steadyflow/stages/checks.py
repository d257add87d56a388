"""The one pipeline check: everything known about a pipeline before a document runs.

``steadyflow validate``, ``run``, ``try``, ``deploy``/``serve``, Dask workers and the Python
API all call :func:`check_pipeline` (usually through :func:`load_checked`), so a pipeline that one
of them accepts is accepted by all. Loading (:func:`steadyflow.spec.loader.load_pipeline`) checks
the file on its own; this adds what needs the pipeline's code: its plugin modules, the checks,
estimators and stage kinds they register.
"""

from __future__ import annotations

from pathlib import Path

from steadyflow.spec.errors import Problem, SpecError
from steadyflow.spec.loader import LoadedPipeline, load_pipeline
from steadyflow.stages.routing import route_problems
from steadyflow.validators.plugins import plugin_problems


def check_pipeline(pipeline: LoadedPipeline, *, import_code: bool = True) -> list[Problem]:
    """Every problem of a loaded pipeline that needs its code: plugin modules, plugin checks, estimators.

    ``import_code=False`` imports none of the pipeline's code (plugin modules run when imported):
    what only the code could tell is then not verified, and not reported.
    """
    return plugin_problems(pipeline, import_plugins=import_code) + route_problems(pipeline)


def load_checked(path: str | Path, overrides: list[str] | None = None, *, import_code: bool = True) -> LoadedPipeline:
    """Load the pipeline at ``path`` and check it; raise :class:`SpecError` with every problem (one line each)."""
    pipeline = load_pipeline(path, overrides or [], import_code=import_code)
    problems = check_pipeline(pipeline, import_code=import_code)
    if problems:
        raise SpecError(problems)
    return pipeline
