"""Load a pipeline file: YAML -> raw data -> pydantic spec -> checked, compiled pipeline.

:func:`load_pipeline` is the only entry point. It raises :class:`SpecError`
with every problem it finds, one line each, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from steadyflow.spec.errors import Problem, SpecError
from steadyflow.spec.errors_map import validation_problems
from steadyflow.spec.models import AiStage, Pipeline, RulesSpec, RulesStage
from steadyflow.spec.overrides import apply_overrides, interpolate_env
from steadyflow.spec.prompt import Prompt
from steadyflow.spec.yaml_positions import Positions, load_yaml


@dataclass
class CompiledStage:
    """A stage with everything its files and declarations resolve to."""

    spec: AiStage | RulesStage
    output_model: type[BaseModel]
    prompt: Prompt | None = None
    rules: dict[int, RulesSpec] = field(default_factory=dict)
    """Rules by ladder index (AI stages) or at index 0 (rules stages)."""

    @property
    def id(self) -> str:
        """The stage id."""
        return self.spec.id


@dataclass
class LoadedPipeline:
    """A valid pipeline, ready to compile into a flow."""

    spec: Pipeline
    path: Path
    stages: list[CompiledStage]
    positions: Positions = field(default_factory=lambda: Positions(""))
    """Where each value of the file is, for problems found after loading (unknown plugin checks)."""

    @property
    def base_dir(self) -> Path:
        """Relative paths in the file are relative to the file's folder."""
        return self.path.parent


def read_text(path: Path, shown: str) -> str:
    """Read a UTF-8 file or raise a one-line :class:`SpecError`."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(shown, 1, 1, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(shown, 1, 1, "", f"not valid UTF-8 (byte {exc.start})")]) from None
    except OSError as exc:
        raise SpecError([Problem(shown, 1, 1, "", f"cannot read file: {exc.strerror}")]) from None


def parse_spec(text: str, shown: str, overrides: list[str] | None = None) -> tuple[Pipeline, dict[str, Any], Positions]:
    """Parse and validate a pipeline's text; no other file is read."""
    data, positions = load_yaml(text, shown)
    if not isinstance(data, dict):
        raise SpecError([Problem(shown, 1, 1, "", "a pipeline file must be a mapping with 'pipeline' and 'stages'")])
    if overrides:
        apply_overrides(data, overrides)
    data = interpolate_env(data, positions)
    try:
        spec = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_problems(exc, data, positions)) from None
    return spec, data, positions


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> LoadedPipeline:
    """Load, validate and compile the pipeline at ``path``.

    ``overrides`` are ``dotted.key=value`` strings applied before validation.
    """
    from steadyflow.spec.checks import compile_stages  # checks import this module's types

    file = Path(path)
    shown = str(path)
    spec, data, positions = parse_spec(read_text(file, shown), shown, overrides)
    stages = compile_stages(spec, data, positions, file.parent)
    return LoadedPipeline(spec=spec, path=file.resolve(), stages=stages, positions=positions)
