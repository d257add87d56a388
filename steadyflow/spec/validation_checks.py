"""Static checks of a stage's ``validate:`` list and PII settings, run by ``steadyflow validate``.

Everything that can be known before a document arrives is checked here: the
layer of each check, the output fields it names, whether its ``on_fail`` makes
sense for it, and every CEL rule (parse errors and unknown names, with the
line and column inside the pipeline file).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from steadyflow.core.names import did_you_mean
from steadyflow.spec.cel import check_rule
from steadyflow.spec.errors import Problem, format_path
from steadyflow.spec.models import AiStage, PluginStage, RulesStage
from steadyflow.spec.output_schema import takes_confidence
from steadyflow.spec.validation import (
    BUILTIN,
    FIXABLE,
    LAYER_OF,
    ConfidenceCheck,
    PluginCheck,
    RequiredIfCheck,
    RuleCheck,
    SimilarCheck,
)
from steadyflow.spec.yaml_positions import Path, Positions

#: presidio's predefined recognizers (2.2): what ``redact_pii`` and ``pii.entities`` may name.
PII_ENTITIES = frozenset(
    {
        "CREDIT_CARD",
        "CRYPTO",
        "DATE_TIME",
        "EMAIL_ADDRESS",
        "IBAN_CODE",
        "IP_ADDRESS",
        "MAC_ADDRESS",
        "NRP",
        "LOCATION",
        "PERSON",
        "PHONE_NUMBER",
        "MEDICAL_LICENSE",
        "URL",
        "US_BANK_NUMBER",
        "US_DRIVER_LICENSE",
        "US_ITIN",
        "US_MBI",
        "US_NPI",
        "US_PASSPORT",
        "US_SSN",
        "UK_NHS",
        "UK_NINO",
        "UK_POSTCODE",
        "UK_VEHICLE_REGISTRATION",
        "ES_NIF",
        "ES_NIE",
        "IT_FISCAL_CODE",
        "IT_DRIVER_LICENSE",
        "IT_VAT_CODE",
        "IT_PASSPORT",
        "IT_IDENTITY_CARD",
        "PL_PESEL",
        "SG_NRIC_FIN",
        "SG_UEN",
        "AU_ABN",
        "AU_ACN",
        "AU_TFN",
        "AU_MEDICARE",
        "IN_PAN",
        "IN_AADHAAR",
        "IN_VEHICLE_REGISTRATION",
        "IN_VOTER",
        "IN_PASSPORT",
        "IN_GSTIN",
        "FI_PERSONAL_IDENTITY_CODE",
        "KR_RRN",
        "KR_DRIVER_LICENSE",
        "KR_FRN",
        "KR_PASSPORT",
        "KR_BRN",
        "TH_TNIN",
        "NG_NIN",
        "NG_VEHICLE_REGISTRATION",
        "SE_PERSONNUMMER",
        "SE_ORGANISATIONSNUMMER",
        "DE_TAX_ID",
        "DE_PASSPORT",
        "DE_ID_CARD",
        "AGE",
        "EMAIL",
        "ID",
        "ORGANIZATION",
        "UUID",
    }
)
_FIELD_KEYS = ("field", "left", "right", "total")
_LIST_KEYS = ("fields", "parts")


def _entity_hint(entity: str) -> str:
    return (
        did_you_mean(entity, PII_ENTITIES)
        or " (presidio types include EMAIL_ADDRESS, PHONE_NUMBER, PERSON, CREDIT_CARD, IBAN_CODE)"
    )


def _field_names(check: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(sub-path, field name) for every output field a check names."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for key in _FIELD_KEYS:
        value = getattr(check, key, None)
        if isinstance(value, str):
            found.append(((key,), value))
    for key in _LIST_KEYS:
        for i, value in enumerate(getattr(check, key, None) or []):
            found.append(((key, i), value))
    return found


def _rule_problems(source: str, fields: set[str], pos: Positions, at: Path) -> list[Problem]:
    line, col = pos.find(at)
    problems = []
    for issue in check_rule(source, fields):
        # the rule's own line/column, shifted to where its text starts in the file (+1 for a quote)
        shift = col if issue.line == 1 else 0
        problems.append(Problem(pos.file, line + issue.line - 1, issue.column + shift, format_path(at), issue.message))
    return problems


def _on_fail_problems(check: Any, model: type[BaseModel], pos: Positions, at: Path) -> list[Problem]:
    name = check.check
    if check.on_fail == "fix" and name in BUILTIN and name not in FIXABLE:
        fixable = ", ".join(sorted(FIXABLE))
        return [
            pos.problem(
                (*at, "on_fail"),
                f"check '{name}' has no fix: use reask, escalate, quarantine or noop (fixable: {fixable})",
            )
        ]
    if check.on_fail == "filter":
        named = [f for _, f in _field_names(check)]
        required = [f for f in named if f in model.model_fields and model.model_fields[f].is_required()]
        if not named or required:
            what = f"'{required[0]}' is required" if required else "it names no field"
            return [
                pos.problem(
                    (*at, "on_fail"),
                    f"filter drops the failing field, but {what}: mark the field optional or use another action",
                )
            ]
    return []


def check_validators(
    stage: AiStage | RulesStage | PluginStage, model: type[BaseModel], pos: Positions, at: Path
) -> list[Problem]:
    """Problems in ``stage.validate_`` and in the stage's PII settings (every stage kind has both)."""
    problems: list[Problem] = []
    fields = set(model.model_fields)
    for j, check in enumerate(stage.validate_):
        if isinstance(check, PluginCheck):
            continue  # plugins are checked against the registry by steadyflow.validators
        problems += _check_problems(check, model, fields, pos, (*at, "validate", j))
    return problems + _pii_problems(stage, fields, pos, at)


def _check_problems(check: Any, model: type[BaseModel], fields: set[str], pos: Positions, where: Path) -> list[Problem]:
    """Problems of one built-in check: its layer, the fields it names, its on_fail, its rules and its settings."""
    problems: list[Problem] = []
    if LAYER_OF[check.check] != check.layer:
        problems.append(
            pos.problem((*where, "layer"), f"check '{check.check}' belongs to layer '{LAYER_OF[check.check]}'")
        )
    for sub, name in _field_names(check):
        if name.split(".")[0] not in fields:
            problems.append(pos.problem((*where, *sub), f"no output field '{name}'{did_you_mean(name, fields)}"))
    problems += _on_fail_problems(check, model, pos, where)
    if isinstance(check, RuleCheck):
        problems += _rule_problems(check.rule, fields, pos, (*where, "rule"))
    if isinstance(check, RequiredIfCheck):
        problems += _rule_problems(check.when, fields, pos, (*where, "when"))
    if isinstance(check, ConfidenceCheck):
        problems += _confidence_problems(check, model, pos, where)
    if isinstance(check, SimilarCheck) and check.to == "label" and not check.labels:
        problems.append(
            pos.problem((*where, "to"), "to: label needs 'labels': a description of each value of the field")
        )
    return problems + _unknown_entities(getattr(check, "entities", None) or [], pos, (*where, "entities"))


def _confidence_problems(check: ConfidenceCheck, model: type[BaseModel], pos: Positions, at: Path) -> list[Problem]:
    """A confidence is known only once the answer is in, and only for enum and boolean fields."""
    problems = []
    if check.on_fail == "reask":
        message = "a confidence is known only after the answer: use escalate, review, quarantine or noop"
        problems.append(pos.problem((*at, "on_fail"), message))
    prop = model.model_json_schema().get("properties", {}).get(check.field)
    if prop is not None and not takes_confidence(prop):
        problems.append(pos.problem((*at, "field"), f"'{check.field}' is no enum or boolean: it has no confidence"))
    return problems


def _pii_problems(
    stage: AiStage | RulesStage | PluginStage, fields: set[str], pos: Positions, at: Path
) -> list[Problem]:
    """Problems in the stage's ``input.redact_pii`` and ``input.restore_pii``."""
    problems = _unknown_entities(stage.input.redact_pii or [], pos, (*at, "input", "redact_pii"))
    for k, name in enumerate(stage.input.restore_pii):
        if name not in fields:
            problems.append(
                pos.problem((*at, "input", "restore_pii", k), f"no output field '{name}'{did_you_mean(name, fields)}")
            )
    if stage.input.restore_pii and not stage.input.redact_pii:
        problems.append(
            pos.problem((*at, "input", "restore_pii"), "restore_pii needs redact_pii: nothing is redacted to restore")
        )
    return problems


def _unknown_entities(entities: list[str], pos: Positions, at: Path) -> list[Problem]:
    """A problem for each entity of the list at ``at`` that presidio does not know."""
    return [
        pos.problem((*at, k), f"unknown PII entity '{entity}'{_entity_hint(entity)}")
        for k, entity in enumerate(entities)
        if entity not in PII_ENTITIES
    ]
