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
from steadyflow.spec.models import AiStage, PluginStage
from steadyflow.spec.validation import BUILTIN, PluginCheck
from steadyflow.stages.kinds import STAGE_KINDS
from steadyflow.stages.routing import route_problems
from steadyflow.validators.base import CHECKS
from steadyflow.validators.plugins import plugin_problems


def check_pipeline(pipeline: LoadedPipeline, *, import_code: bool = True) -> list[Problem]:
    """Every problem of a loaded pipeline that needs its code: plugin modules, plugin checks, estimators, stage kinds.

    ``import_code=False`` imports none of the pipeline's code (plugin modules run when imported):
    what only the code could tell is then not verified, and not reported.
    """
    problems = plugin_problems(pipeline, import_plugins=import_code) + route_problems(pipeline)
    if import_code:  # plugin_problems imported the plugin modules: their kinds and checks are registered now
        problems += stage_problems(pipeline)
    return problems


def stage_problems(pipeline: LoadedPipeline) -> list[Problem]:
    """Stage kinds no plugin registered, and plugin checks of rules and plugin stages no plugin registered."""
    problems = []
    where = pipeline.positions.problem
    for i, stage in enumerate(pipeline.spec.stages):
        if isinstance(stage, PluginStage) and stage.kind not in STAGE_KINDS:
            problems.append(where(("stages", i, "kind"), STAGE_KINDS.unknown(stage.kind, also=("ai", "rules"))))
        if isinstance(stage, AiStage):
            continue  # an ai stage's checks are plugin_problems' (validators/plugins.py)
        for j, check in enumerate(stage.validate_):
            if isinstance(check, PluginCheck) and check.check not in CHECKS:
                at = ("stages", i, "validate", j, "check")
                problems.append(where(at, CHECKS.unknown(check.check, also=tuple(BUILTIN))))
    return problems


def load_checked(path: str | Path, overrides: list[str] | None = None, *, import_code: bool = True) -> LoadedPipeline:
    """Load the pipeline at ``path`` and check it; raise :class:`SpecError` with every problem (one line each)."""
    pipeline = load_pipeline(path, overrides or [], import_code=import_code)
    problems = check_pipeline(pipeline, import_code=import_code)
    if problems:
        raise SpecError(problems)
    return pipeline
