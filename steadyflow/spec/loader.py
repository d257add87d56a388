"""Load a pipeline file: YAML -> raw data -> pydantic spec -> checked, compiled pipeline.

:func:`load_pipeline` is the only entry point. It raises :class:`SpecError`
with every problem it finds, one line each, and nothing else.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from steadyflow.spec.errors import Problem, SpecError
from steadyflow.spec.errors_map import validation_problems
from steadyflow.spec.models import Pipeline, RulesSpec, Stage
from steadyflow.spec.overrides import apply_overrides, interpolate_env, scrub
from steadyflow.spec.prompt import Prompt
from steadyflow.spec.yaml_positions import MAX_FILE_BYTES, Positions, load_yaml


@dataclass
class CompiledStage:
    """A stage with everything its files and declarations resolve to."""

    spec: Stage
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


MAX_STAGES = 200
"""Stages in one pipeline file; a bound so that validating any file takes about a second at most."""
MAX_INCLUDED_BYTES = 1_000_000
"""Prompt and rules files larger than this are refused (a device such as /dev/zero never ends)."""


class ConfinedReadError(Exception):
    """A file cannot be read.

    The message is a predicate ('not found', 'is a FIFO...'): callers put the file's name before it.
    It says why and what to do, never what the file holds.
    """


def _read_regular(path: Path, limit: int) -> str:
    """At most ``limit`` bytes of a regular file as UTF-8.

    A FIFO, device or directory is refused before it is opened.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfinedReadError(f"is not a regular file ({_kind(info.st_mode)}): name a text file")
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, open() still returns at once
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfinedReadError("is not a regular file: name a text file")
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfinedReadError("not found") from None
    except OSError as exc:
        raise ConfinedReadError(f"cannot be read: {exc.strerror}") from None
    if len(raw) > limit:
        raise ConfinedReadError(f"is larger than {limit} bytes: shorten it or split it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfinedReadError(f"is not valid UTF-8 (byte {exc.start}): save it as UTF-8") from None


def read_text(path: Path, shown: str) -> str:
    """Read a pipeline file (a bounded, regular UTF-8 file) or raise a one-line :class:`SpecError`."""
    try:
        return _read_regular(path, MAX_FILE_BYTES)
    except ConfinedReadError as exc:
        raise SpecError([Problem(shown, 1, 1, "", f"file {exc}")]) from None


def read_confined(base: Path, ref: str) -> str:
    """Read ``ref``, relative to the pipeline's folder ``base``, as bounded UTF-8 text.

    Only regular files inside ``base`` (after following symlinks) are read, so a
    pipeline file cannot send ``/proc/self/environ`` or ``../secrets`` to a model,
    and a FIFO or device cannot hang ``validate``. Raises :class:`ConfinedReadError`.
    """
    folder = base.resolve()
    try:
        target = (folder / ref).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise ConfinedReadError("cannot be resolved to a file (a symlink loop?)") from None
    if not target.is_relative_to(folder):
        raise ConfinedReadError(
            "is outside the pipeline's folder (symlinks followed): "
            "move the file into that folder and name it relative to it"
        )
    return _read_regular(target, MAX_INCLUDED_BYTES)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def parse_spec(text: str, shown: str, overrides: list[str] | None = None) -> tuple[Pipeline, dict[str, Any], Positions]:
    """Parse and validate a pipeline's text; no other file is read."""
    data, positions = load_yaml(text, shown)
    if not isinstance(data, dict):
        raise SpecError([Problem(shown, 1, 1, "", "a pipeline file must be a mapping with 'pipeline' and 'stages'")])
    stages = data.get("stages")
    if isinstance(stages, list) and len(stages) > MAX_STAGES:
        # checked before validating anything: each stage compiles a model and parses its rules
        raise SpecError(
            [
                positions.problem(
                    ("stages",),
                    f"{len(stages)} stages: a pipeline has at most {MAX_STAGES}; split it into several pipelines",
                )
            ]
        )
    if overrides:
        apply_overrides(data, overrides)
    data, expanded = interpolate_env(data, positions)
    try:
        spec = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise SpecError(scrub(validation_problems(exc, data, positions), expanded)) from None
    return spec, data, positions


def load_pipeline(path: str | Path, overrides: list[str] | None = None, *, import_code: bool = True) -> LoadedPipeline:
    """Load, validate and compile the pipeline at ``path``.

    ``overrides`` are ``dotted.key=value`` strings applied before validation.
    ``import_code=False`` imports nothing the pipeline names (its ``output_model``
    classes): a safe check of an untrusted file, whose stages with an
    ``output_model`` are then missing from the result.
    """
    from steadyflow.spec.checks import compile_stages  # checks import this module's types

    file = Path(path)
    shown = str(path)
    spec, data, positions = parse_spec(read_text(file, shown), shown, overrides)
    stages = compile_stages(spec, data, positions, file.parent, import_code=import_code)
    return LoadedPipeline(spec=spec, path=file.resolve(), stages=stages, positions=positions)
