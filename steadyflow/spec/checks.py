"""Checks that span more than one value, and compilation of each stage.

Each check appends :class:`Problem` lines instead of stopping at the first,
so one ``steadyflow validate`` shows everything wrong with a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import regex
from pydantic import BaseModel, ValidationError

from steadyflow.spec.errors import Problem, SpecError, did_you_mean, format_path
from steadyflow.spec.errors_map import validation_problems
from steadyflow.spec.loader import CompiledStage, ConfinedReadError, read_confined
from steadyflow.spec.models import AiStage, DefaultRung, FieldSpec, ModelRung, Pipeline, RulesRung, RulesSpec
from steadyflow.spec.output_schema import compile_output, field_name_problem, import_model, pattern_problem
from steadyflow.spec.prompt import Prompt, check_template, make_prompt
from steadyflow.spec.validation_checks import check_validators
from steadyflow.spec.yaml_positions import Path as DataPath
from steadyflow.spec.yaml_positions import Positions, load_yaml


def field_enums(model: type[BaseModel]) -> dict[str, list[Any]]:
    """Allowed values of each top-level enum field of an output model."""
    schema = model.model_json_schema()
    out: dict[str, list[Any]] = {}
    for name, prop in schema.get("properties", {}).items():
        options = [prop, *prop.get("anyOf", [])]
        for option in options:
            if "enum" in option:
                out[name] = list(option["enum"])
            elif "const" in option:
                out.setdefault(name, []).append(option["const"])
    return out


def _check_rules(rules: RulesSpec, model: type[BaseModel], pos: Positions, prefix: DataPath) -> list[Problem]:
    problems = []
    enums = field_enums(model)
    for name, rule in rules.fields.items():
        at = (*prefix, "fields", name)
        if name not in model.model_fields:
            problems.append(pos.problem(at, f"no output field '{name}'{did_you_mean(name, model.model_fields)}", key=True))
            continue
        for value in (rule.keywords or {}):
            if name in enums and value not in [str(v) for v in enums[name]]:
                hint = did_you_mean(value, [str(v) for v in enums[name]])
                problems.append(pos.problem((*at, "keywords", value), f"'{value}' is not a value of '{name}'{hint}", key=True))
        if rule.regex is not None:
            try:
                regex.compile(rule.regex)
            except regex.error as exc:
                problems.append(pos.problem((*at, "regex"), f"regex does not compile: {exc}"))
    return problems


def _load_rules(ref: str | RulesSpec, model: type[BaseModel], pos: Positions, at: DataPath, base: Path) -> tuple[RulesSpec | None, list[Problem]]:
    if isinstance(ref, RulesSpec):
        return ref, _check_rules(ref, model, pos, at)
    file = base / ref
    try:
        data, file_pos = load_yaml(read_confined(base, ref), str(file))
        rules = RulesSpec.model_validate(data)
    except ConfinedReadError as exc:
        return None, [pos.problem(at, f"rules file '{ref}' {exc}")]
    except SpecError as exc:
        return None, [pos.problem(at, f"rules file '{ref}' is invalid"), *exc.problems]
    except ValidationError as exc:
        return None, validation_problems(exc, data, file_pos)
    return rules, _check_rules(rules, model, file_pos, ())


def _check_default(value: dict[str, Any], model: type[BaseModel], pos: Positions, at: DataPath) -> list[Problem]:
    try:
        model.model_validate(value)
    except ValidationError as exc:
        return [pos.problem((*at, *err["loc"]), f"default does not fit the output: {err['msg']}") for err in exc.errors(include_url=False)]
    return []


def _field_problems(fields: dict[str, FieldSpec], pos: Positions, at: DataPath) -> list[Problem]:
    """Names pydantic cannot take and patterns its regex engine cannot run, at every level of nesting."""
    problems = []
    for name, fspec in fields.items():
        message = field_name_problem(name)
        if message is not None:
            problems.append(pos.problem((*at, name), message, key=True))
        if fspec.pattern is not None and (message := pattern_problem(fspec.pattern)) is not None:
            problems.append(pos.problem((*at, name, "pattern"), message))
        if fspec.items is not None:
            problems += _field_problems({"items": fspec.items}, pos, (*at, name))
        if fspec.fields:
            problems += _field_problems(fspec.fields, pos, (*at, name, "fields"))
    return problems


def _output_model(stage: Any, pos: Positions, at: DataPath, import_code: bool) -> tuple[type[BaseModel] | None, list[Problem]]:
    try:
        if stage.output_model:
            return (import_model(stage.output_model), []) if import_code else (None, [])
        problems = _field_problems(stage.output or {}, pos, (*at, "output"))
        if problems:
            return None, problems
        return compile_output(stage.output or {}, stage.id), []
    except ValueError as exc:
        where = (*at, "output_model") if stage.output_model else (*at, "output")
        return None, [pos.problem(where, str(exc))]


def _load_prompt(stage: AiStage, pos: Positions, at: DataPath, base: Path) -> tuple[Prompt | None, list[Problem]]:
    spec = stage.prompt
    if spec.file is not None:
        file = base / spec.file
        try:
            text = read_confined(base, spec.file)
        except ConfinedReadError as exc:
            return None, [pos.problem((*at, "prompt", "file"), f"prompt file '{spec.file}' {exc}")]
        shown, line_offset = str(file), 0
    else:
        text = spec.template or ""
        line, _ = pos.find((*at, "prompt", "template"))
        shown, line_offset = pos.file, line - 1
    bad = check_template(text)
    if bad:
        line, message = bad
        return None, [Problem(shown, line + line_offset, 1, format_path((*at, "prompt")), message)]
    return make_prompt(text, spec.system), []


def _check_ladder(
    stage: AiStage, spec: Pipeline, model: type[BaseModel], pos: Positions, at: DataPath, base: Path, compiled: CompiledStage
) -> list[Problem]:
    problems: list[Problem] = []
    if not any(isinstance(r, ModelRung) for r in stage.ladder):
        problems.append(pos.problem((*at, "ladder"), "an ai stage needs at least one model rung"))
    if stage.route is not None:
        classes = {"simple", *stage.route.thresholds}
        models = [r.model for r in stage.ladder if isinstance(r, ModelRung)]
        for name, model_name in stage.route.enter.items():
            if name not in classes:
                problems.append(pos.problem((*at, "route", "enter", name), f"unknown class '{name}'{did_you_mean(name, classes)}", key=True))
            if model_name not in models:
                hint = did_you_mean(model_name, models) or f" (model rungs: {', '.join(models)})"
                problems.append(pos.problem((*at, "route", "enter", name), f"no model rung for '{model_name}'{hint}"))
    for i, rung in enumerate(stage.ladder):
        where = (*at, "ladder", i)
        if isinstance(rung, ModelRung) and rung.model not in spec.models:
            hint = did_you_mean(rung.model, spec.models) or f" (models: {', '.join(spec.models) or 'none declared'})"
            problems.append(pos.problem((*where, "model"), f"unknown model '{rung.model}'{hint}"))
        if isinstance(rung, DefaultRung):
            if i != len(stage.ladder) - 1:
                problems.append(pos.problem(where, "a default rung must be the last rung (nothing after it is ever reached)"))
            problems += _check_default(rung.default, model, pos, (*where, "default"))
        if isinstance(rung, RulesRung):
            rules, found = _load_rules(rung.rules, model, pos, (*where, "rules"), base)
            problems += found
            if rules is not None:
                compiled.rules[i] = rules
    return problems


_LOCAL_ONLY = ("model_path", "model_sha256")


def check_models(spec: Pipeline, pos: Positions) -> list[Problem]:
    """Settings that only mean something for one provider, and a context too small for the answer."""
    problems = []
    for name, model in spec.models.items():
        if model.context_tokens is not None and model.max_tokens >= model.context_tokens:
            message = f"max_tokens {model.max_tokens} leaves no room for a prompt in context_tokens {model.context_tokens}"
            problems.append(pos.problem(("models", name, "max_tokens"), message))
        if model.tokenizer is not None and not Path(model.tokenizer).expanduser().is_file():
            problems.append(pos.problem(("models", name, "tokenizer"), f"tokenizer '{model.tokenizer}' is not a file (expected a GGUF file)"))
        if model.provider == "local":
            if model.mode not in (None, "json"):
                message = "provider 'local' always uses mode 'json' with a schema grammar: remove 'mode'"
                problems.append(pos.problem(("models", name, "mode"), message))
            continue
        for key in _LOCAL_ONLY:
            if getattr(model, key) is not None:
                message = f"'{key}' applies to provider 'local' only (this model is '{model.provider}')"
                problems.append(pos.problem(("models", name, key), message, key=True))
    return problems


def compile_stages(spec: Pipeline, data: dict[str, Any], pos: Positions, base: Path, *, import_code: bool = True) -> list[CompiledStage]:
    """Check every stage against the rest of the file and compile it.

    With ``import_code=False`` no ``output_model`` is imported (``validate --no-plugins``):
    such stages are checked for their shape only and left out of the result.
    """
    problems: list[Problem] = check_models(spec, pos)
    compiled: list[CompiledStage] = []
    seen: set[str] = set()
    for index, stage in enumerate(spec.stages):
        at: DataPath = ("stages", index)
        if stage.id in seen:
            problems.append(pos.problem((*at, "id"), f"duplicate stage id '{stage.id}'"))
        seen.add(stage.id)
        model, found = _output_model(stage, pos, at, import_code)
        problems += found
        if model is None:
            continue
        result = CompiledStage(spec=stage, output_model=model)
        if isinstance(stage, AiStage):
            result.prompt, found = _load_prompt(stage, pos, at, base)
            problems += found
            problems += check_validators(stage, model, pos, at)
            problems += _check_ladder(stage, spec, model, pos, at, base, result)
        else:
            rules, found = _load_rules(stage.rules, model, pos, (*at, "rules"), base)
            problems += found
            if rules is not None:
                result.rules[0] = rules
            if stage.default is not None:
                problems += _check_default(stage.default, model, pos, (*at, "default"))
        compiled.append(result)
    if problems:
        raise SpecError(problems)
    return compiled
