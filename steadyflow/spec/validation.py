"""The ``validate:`` list of an AI stage: one entry per check, each with a layer and an ``on_fail``.

Built-in checks have their own models (so a misspelt parameter is an error
with a position, and editors complete them from the JSON Schema); any other
``check`` name is a plugin registered with ``@validator("name")`` and takes
its parameters under ``with:``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from steadyflow.spec.base import Strict

Layer = Literal["structural", "semantic", "business", "safety"]
OnFail = Literal["reask", "fix", "filter", "escalate", "review", "quarantine", "noop"]
Comparison = Literal["<", "<=", "==", "!=", ">=", ">"]


class _Check(Strict):
    layer: Layer
    on_fail: OnFail = Field(
        "escalate",
        description="what a failure does: reask, fix, filter, escalate (next rung), review (accept, flagged for "
        "a person), quarantine or noop",
    )
    message: str | None = Field(
        None, description="what the model (reask) and the record are told when this check fails"
    )


# --- structural ---------------------------------------------------------------------------------


class CompareCheck(_Check):
    """Cross-field comparison: ``left op right`` (field names; dates, numbers or strings)."""

    check: Literal["compare"]
    left: str
    op: Comparison
    right: str


class RequiredIfCheck(_Check):
    """``field`` must be present (not null, not empty) when the CEL condition ``when`` holds."""

    check: Literal["required_if"]
    field: str
    when: str


# --- semantic -----------------------------------------------------------------------------------


class GroundedCheck(_Check):
    """Each value of ``fields`` (strings or lists of strings) must occur in the source document."""

    check: Literal["grounded"]
    fields: list[str] = Field(min_length=1)
    match: Literal["exact", "normalized", "fuzzy"] = "normalized"
    threshold: float = Field(0.85, gt=0, le=1, description="fuzzy: minimum partial-ratio similarity (0-1)")


class SumCheck(_Check):
    """The numbers in ``parts`` (fields or one list field) must add up to ``total``."""

    check: Literal["sum"]
    parts: list[str] = Field(min_length=1)
    total: str
    tolerance: float = Field(0.01, ge=0)


class DateOrderCheck(_Check):
    """The dates in ``fields`` must be in order (ISO 8601 strings)."""

    check: Literal["date_order"]
    fields: list[str] = Field(min_length=2)
    strict: bool = False


class SimilarCheck(_Check):
    """Embedding similarity of ``field`` to the source text, or to the description of its label."""

    check: Literal["similar"]
    field: str
    to: Literal["source", "label"] = "source"
    labels: dict[str, str] | None = Field(None, description="to: label: a description of each value of 'field'")
    threshold: float = Field(0.3, ge=-1, le=1, description="minimum cosine similarity")


class ConfidenceCheck(_Check):
    """The model's probability of its answer for an enum or boolean ``field`` is at least ``min``.

    From the endpoint's token log-probabilities (``logprobs: true`` on the model, asked for
    automatically for a stage with this check), or from ``vote:`` agreement on the model rung.
    Outputs of rules and defaults are no model answers: the check does not apply to them. A model
    answer that came without a confidence fails it.
    """

    check: Literal["confidence"]
    field: str
    min: float = Field(0.8, ge=0, le=1, description="lowest probability accepted")


# --- business -----------------------------------------------------------------------------------


class RuleCheck(_Check):
    """A Common Expression Language rule over ``input``, ``output`` and ``run``; it must be true."""

    check: Literal["rule"]
    rule: str


# --- safety -------------------------------------------------------------------------------------


class PiiCheck(_Check):
    """presidio on output fields: ``fix`` masks what it finds, any other action blocks."""

    check: Literal["pii"]
    fields: list[str] | None = Field(None, description="default: every string field")
    entities: list[str] | None = Field(
        None, description="presidio entity types; default: personal identifiers (not dates, places or organisations)"
    )
    score: float = Field(0.35, ge=0, le=1, description="minimum presidio score (its phone recognizer scores 0.4)")


class BannedCheck(_Check):
    """Banned words or topics (a guardrails-ai Guard); ``fix`` replaces them with ``***``."""

    check: Literal["banned"]
    words: list[str] = Field(min_length=1)
    fields: list[str] | None = None


class CompetitorsCheck(_Check):
    """Mentions of competitors or secret names (a guardrails-ai Guard); ``fix`` redacts them."""

    check: Literal["competitors"]
    names: list[str] = Field(min_length=1)
    fields: list[str] | None = None


class SecretsCheck(_Check):
    """API keys, tokens and private keys in output (a guardrails-ai Guard); ``fix`` redacts them."""

    check: Literal["secrets"]
    fields: list[str] | None = None


class FormatCheck(_Check):
    """Length and format policy of one field (a guardrails-ai Guard); ``fix`` truncates to ``max_chars``."""

    check: Literal["format"]
    field: str
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)
    pattern: str | None = None
    single_line: bool = False


class PluginCheck(_Check):
    """A check registered by a plugin: ``@validator("name")`` or the ``steadyflow.validators`` entry points."""

    check: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


BUILTIN: dict[str, type[_Check]] = {
    "compare": CompareCheck,
    "required_if": RequiredIfCheck,
    "grounded": GroundedCheck,
    "sum": SumCheck,
    "date_order": DateOrderCheck,
    "similar": SimilarCheck,
    "confidence": ConfidenceCheck,
    "rule": RuleCheck,
    "pii": PiiCheck,
    "banned": BannedCheck,
    "competitors": CompetitorsCheck,
    "secrets": SecretsCheck,
    "format": FormatCheck,
}
LAYER_OF: dict[str, str] = {
    "compare": "structural",
    "required_if": "structural",
    "grounded": "semantic",
    "sum": "semantic",
    "date_order": "semantic",
    "similar": "semantic",
    "confidence": "semantic",
    "rule": "business",
    "pii": "safety",
    "banned": "safety",
    "competitors": "safety",
    "secrets": "safety",
    "format": "safety",
}
FIXABLE = frozenset({"pii", "banned", "competitors", "secrets", "format"})


def _which(value: Any) -> str:
    check = value.get("check") if isinstance(value, dict) else getattr(value, "check", None)
    return check if isinstance(check, str) and check in BUILTIN else "plugin"


CheckSpec = Annotated[
    Annotated[CompareCheck, Tag("compare")]
    | Annotated[RequiredIfCheck, Tag("required_if")]
    | Annotated[GroundedCheck, Tag("grounded")]
    | Annotated[SumCheck, Tag("sum")]
    | Annotated[DateOrderCheck, Tag("date_order")]
    | Annotated[SimilarCheck, Tag("similar")]
    | Annotated[ConfidenceCheck, Tag("confidence")]
    | Annotated[RuleCheck, Tag("rule")]
    | Annotated[PiiCheck, Tag("pii")]
    | Annotated[BannedCheck, Tag("banned")]
    | Annotated[CompetitorsCheck, Tag("competitors")]
    | Annotated[SecretsCheck, Tag("secrets")]
    | Annotated[FormatCheck, Tag("format")]
    | Annotated[PluginCheck, Tag("plugin")],
    Discriminator(_which),
]
