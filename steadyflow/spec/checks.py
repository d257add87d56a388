"""Checks that span more than one value, and compilation of each stage.

Each check appends :class:`Problem` lines instead of stopping at the first,
so one ``steadyflow validate`` shows everything wrong with a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import regex
from pydantic import BaseModel, ValidationError

from steadyflow.core.names import did_you_mean
from steadyflow.spec.errors import Problem, SpecError, format_path
from steadyflow.spec.errors_map import validation_problems
from steadyflow.spec.loader import CompiledStage, ConfinedReadError, read_confined
from steadyflow.spec.models import (
    AiStage,
    DefaultRung,
    FieldRule,
    FieldSpec,
    ModelRung,
    Pipeline,
    RulesRung,
    RulesSpec,
    RulesStage,
)
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


def _absent_because(items: Any, gid: int) -> str | bool | None:
    """Why group ``gid`` may not take part in a match of the parsed sequence ``items``.

    Returns None when the group is not in ``items``, False when it takes part in every match
    of ``items``, else a reason. Conservative: constructs it does not know are assumed to
    keep the group, so a reason is given only when a match without the group surely exists.
    """
    from re import _constants as c

    for op, arg in items:
        found: str | bool | None = None
        if op is c.SUBPATTERN:
            found = False if arg[0] == gid else _absent_because(arg[3], gid)
        elif op is c.BRANCH:
            branches = [_absent_because(alt, gid) for alt in arg[1]]
            if any(b is not None for b in branches):
                skipping = [alt for alt, b in zip(arg[1], branches, strict=True) if b is None]
                found = (
                    f"does not take part when {_alternative(skipping[0])} matches"
                    if skipping
                    else next((b for b in branches if isinstance(b, str)), False)
                )
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            found = _absent_because(arg[2], gid)
            if found is not None and arg[0] == 0:
                found = "is optional (it sits in a part repeated zero or more times: ?, * or {0,n})"
        elif op is c.ASSERT_NOT and _absent_because(arg[1], gid) is not None:
            found = "never takes part (it is inside a negative lookaround)"
        elif op is c.ASSERT:
            found = _absent_because(arg[1], gid)
        elif op is c.ATOMIC_GROUP:
            found = _absent_because(arg, gid)
        elif op is c.GROUPREF_EXISTS and any(_absent_because(p, gid) is not None for p in arg[1:] if p is not None):
            found = "may not take part (it is inside a conditional (?(n)...|...))"
        if found is not None:
            return found
    return None


def _alternative(items: Any) -> str:
    """An alternative of a pattern as its text when it is a plain word, else 'another alternative'."""
    from re import _constants as c

    if items and all(op is c.LITERAL for op, _ in items):
        return repr("".join(chr(v) for _, v in items)[:40])
    return "another alternative"


def group_problem(source: str, group: int | str, explicit: bool) -> tuple[str, str | None]:
    """Check a rule's capture group.

    Returns ('group', message) for a group the pattern lacks, ('optional', reason) for one that may not
    take part in a match, ('', None) when neither can be known.
    """
    import re

    compiled = regex.compile(source)
    if isinstance(group, str):
        if group not in compiled.groupindex:
            names = list(compiled.groupindex)
            hint = did_you_mean(group, names) or (
                f" (its groups: {', '.join(names)})" if names else " (it has no named groups)"
            )
            return "group", f"the pattern has no group named '{group}'{hint}"
        gid = compiled.groupindex[group]
    else:
        if group > compiled.groups and (explicit or compiled.groups > 0):
            return (
                "group",
                f"the pattern has {compiled.groups} capture group{'s' * (compiled.groups != 1)}: "
                f"group {group} never matches",
            )
        gid = group
    if gid == 0 or gid > compiled.groups:
        return "", None  # the whole match (the default group 1 of a pattern without groups is the whole match)
    try:
        parsed = re._parser.parse(source)
    except Exception:  # regex-only syntax: no analysis, no claim
        return "", None
    if parsed.state.groups - 1 != compiled.groups:
        return "", None
    reason = _absent_because(list(parsed), gid)
    return ("optional", reason) if isinstance(reason, str) else ("", None)


def _regex_problems(rule: FieldRule, required: bool, pos: Positions, at: DataPath) -> list[Problem]:
    try:
        regex.compile(rule.regex or "")
    except regex.error as exc:
        return [pos.problem((*at, "regex"), f"regex does not compile: {exc}")]
    explicit = "group" in rule.model_fields_set
    kind, message = group_problem(rule.regex or "", rule.group, explicit)
    where = (*at, "group") if explicit else (*at, "regex")
    if kind == "group":
        return [pos.problem(where, f"group {rule.group!r}: {message}")]
    if kind == "optional" and required and rule.default is None and not rule.keywords:
        return [pos.problem(where, f"group {rule.group!r} {message}: add a default (or keywords) for when it does not")]
    return []


def _shape(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[str, list[Any] | None]:
    """('list' | 'object' | 'other', allowed values of the field or of its items)."""

    def resolve(node: dict[str, Any]) -> dict[str, Any]:  # an output_model's nested models and enums are $refs
        ref = node.get("$ref", "")
        return dict(defs.get(ref.rsplit("/", 1)[-1], {})) if ref.startswith("#/$defs/") else node

    for option in map(resolve, [prop, *prop.get("anyOf", [])]):
        if option.get("type") == "array":
            items = resolve(option.get("items", {}))
            return ("object" if items.get("type") == "object" else "list"), items.get("enum")
        if option.get("type") == "object":
            return "object", None
    return "other", None


def _check_rules(rules: RulesSpec, model: type[BaseModel], pos: Positions, prefix: DataPath) -> list[Problem]:
    """Rules that can be known to give nothing or never fit: unknown fields, groups, value types, defaults."""
    problems = []
    enums = field_enums(model)
    schema = model.model_json_schema()
    props, defs = schema.get("properties", {}), schema.get("$defs", {})
    for name, rule in rules.fields.items():
        at = (*prefix, "fields", name)
        if name not in model.model_fields:
            problems.append(
                pos.problem(at, f"no output field '{name}'{did_you_mean(name, model.model_fields)}", key=True)
            )
            continue
        kind, item_enum = _shape(props.get(name, {}), defs)
        allowed = enums.get(name) or item_enum
        for value in rule.keywords or {}:
            if allowed and value not in [str(v) for v in allowed]:
                hint = did_you_mean(value, [str(v) for v in allowed])
                problems.append(
                    pos.problem((*at, "keywords", value), f"'{value}' is not a value of '{name}'{hint}", key=True)
                )
        if kind == "object" and (rule.regex is not None or rule.keywords):
            source = "regex" if rule.regex is not None else "keywords"
            problems.append(
                pos.problem(
                    (*at, source), f"'{name}' holds objects, which a {source} cannot give: fill it with a default only"
                )
            )
        elif rule.regex is not None:
            problems += _regex_problems(rule, model.model_fields[name].is_required(), pos, at)
        if rule.default is not None:
            try:
                model.model_validate({name: rule.default})
            except ValidationError as exc:
                problems += [
                    pos.problem((*at, "default"), f"default does not fit '{name}': {err['msg']}")
                    for err in exc.errors(include_url=False)
                    if err["loc"] and err["loc"][0] == name
                ][:1]
    return problems


def _load_rules(
    ref: str | RulesSpec, model: type[BaseModel], pos: Positions, at: DataPath, base: Path
) -> tuple[RulesSpec | None, list[Problem]]:
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
        return [
            pos.problem((*at, *err["loc"]), f"default does not fit the output: {err['msg']}")
            for err in exc.errors(include_url=False)
        ]
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


def _output_model(
    stage: Any, pos: Positions, at: DataPath, import_code: bool
) -> tuple[type[BaseModel] | None, list[Problem]]:
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


def _check_route(stage: AiStage, pos: Positions, at: DataPath) -> list[Problem]:
    """A route's classes and entry models must exist."""
    problems: list[Problem] = []
    if stage.route is None:
        return problems
    classes = {"simple", *stage.route.thresholds}
    models = [r.model for r in stage.ladder if isinstance(r, ModelRung)]
    for name, model_name in stage.route.enter.items():
        where = (*at, "route", "enter", name)
        if name not in classes:
            problems.append(pos.problem(where, f"unknown class '{name}'{did_you_mean(name, classes)}", key=True))
        if model_name not in models:
            hint = did_you_mean(model_name, models) or f" (model rungs: {', '.join(models)})"
            problems.append(pos.problem(where, f"no model rung for '{model_name}'{hint}"))
    return problems


def _check_ladder(
    stage: AiStage,
    spec: Pipeline,
    model: type[BaseModel],
    pos: Positions,
    at: DataPath,
    base: Path,
    compiled: CompiledStage,
) -> list[Problem]:
    problems: list[Problem] = []
    if not any(isinstance(r, ModelRung) for r in stage.ladder):
        problems.append(pos.problem((*at, "ladder"), "an ai stage needs at least one model rung"))
    problems += _check_route(stage, pos, at)
    for i, rung in enumerate(stage.ladder):
        where = (*at, "ladder", i)
        if isinstance(rung, ModelRung) and rung.model not in spec.models:
            hint = did_you_mean(rung.model, spec.models) or f" (models: {', '.join(spec.models) or 'none declared'})"
            problems.append(pos.problem((*where, "model"), f"unknown model '{rung.model}'{hint}"))
        below = stage.ladder[i + 1 :]
        if isinstance(rung, ModelRung) and rung.hedge is not None and not any(isinstance(r, ModelRung) for r in below):
            problems.append(pos.problem((*where, "hedge"), "a hedge goes to the next model rung; add one below"))
        if isinstance(rung, DefaultRung):
            if i != len(stage.ladder) - 1:
                problems.append(
                    pos.problem(where, "a default rung must be the last rung (nothing after it is ever reached)")
                )
            problems += _check_default(rung.default, model, pos, (*where, "default"))
        if isinstance(rung, RulesRung):
            rules, found = _load_rules(rung.rules, model, pos, (*where, "rules"), base)
            problems += found
            if rules is not None:
                compiled.rules[i] = rules
    return problems


_LOCAL_ONLY = ("model_path", "model_sha256", "servers")


def check_models(spec: Pipeline, pos: Positions) -> list[Problem]:
    """Settings that only mean something for one provider, and a context too small for the answer."""
    problems = []
    for name, model in spec.models.items():
        if model.context_tokens is not None and model.max_tokens >= model.context_tokens:
            message = (
                f"max_tokens {model.max_tokens} leaves no room for a prompt in context_tokens {model.context_tokens}"
            )
            problems.append(pos.problem(("models", name, "max_tokens"), message))
        if model.tokenizer is not None and not Path(model.tokenizer).expanduser().is_file():
            problems.append(
                pos.problem(
                    ("models", name, "tokenizer"), f"tokenizer '{model.tokenizer}' is not a file (expected a GGUF file)"
                )
            )
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


def compile_stages(
    spec: Pipeline, data: dict[str, Any], pos: Positions, base: Path, *, import_code: bool = True
) -> list[CompiledStage]:
    """Check every stage against the rest of the file and compile it.

    With ``import_code=False`` no ``output_model`` is imported (``validate --no-plugins``):
    such stages are checked for their shape only and left out of the result.
    """
    problems: list[Problem] = check_models(spec, pos)
    if spec.telemetry.include_text and any(stage.input.redact_pii for stage in spec.stages):
        problems.append(
            pos.problem(
                ("telemetry", "include_text"),
                "would send documents that a stage redacts (redact_pii) to the collector unredacted; "
                "set it to false, or drop redact_pii",
            )
        )
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
        else:  # rules and plugin stages: their output, then their default, through their checks
            problems += check_validators(stage, model, pos, at)
            if isinstance(stage, RulesStage):
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
