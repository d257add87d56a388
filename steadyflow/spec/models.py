"""Pydantic models of a pipeline file: the steadyflow DSL, version 1.

These models only describe and check the *shape* of a pipeline file. Checks
that need more than one value at a time (does a ladder name a known model,
does a rule name a known field) live in :mod:`steadyflow.spec.checks`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from steadyflow.spec.base import Strict
from steadyflow.spec.resilience import BreakerSpec, BudgetSpec, CacheRung, HedgeSpec, RouteSpec
from steadyflow.spec.validation import CheckSpec

IDENT = r"^[A-Za-z][A-Za-z0-9_-]*$"
FieldType = Literal["string", "integer", "number", "boolean", "enum", "list", "object"]
Scalar = str | int | float | bool


class Price(Strict):
    """List price of a model in USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class ModelSpec(Strict):
    """One model endpoint a ladder can call."""

    provider: Literal["openai", "local"] = Field(description="'openai' is any OpenAI-compatible endpoint")
    model: str | None = Field(None, description="model name sent to the endpoint")
    base_url: str | None = None
    api_key: SecretStr | None = None
    model_path: str | None = Field(None, description="local provider: a GGUF file instead of the default")
    model_sha256: str | None = Field(None, description="local provider: refuse model_path unless its SHA-256 is this")
    context_tokens: int | None = Field(
        None,
        ge=256,
        le=2_000_000,
        description="context window in tokens: prompts that do not fit with max_tokens are not sent "
        "(see input.on_overflow); local: the server's context (default 4096); "
        "other providers: what the endpoint declares (default: unknown, no check)",
    )
    tokenizer: str | None = Field(
        None,
        description="a GGUF file whose vocabulary counts this model's tokens (default: the local model's own; "
        "elsewhere an estimate of 1 token per 3 characters)",
    )
    price: Price = Price()
    timeout_s: float = Field(30.0, gt=0, le=3600)
    max_tokens: int = Field(512, gt=0, le=200_000)
    temperature: float = Field(0.0, ge=0, le=2)
    mode: Literal["tools", "json_schema", "json"] | None = Field(
        None, description="how the response schema is sent; default: tools (openai), json+grammar (local)"
    )
    max_concurrency: int | None = Field(None, ge=1, le=1024)
    servers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="local provider: model servers a run starts, the cores split between them, one request each "
        "(default: 2 on a machine with 2 cores or more; each holds a copy of the model in memory); "
        "with base_url: how many requests that endpoint takes at once (default 1)",
    )
    breaker: BreakerSpec = BreakerSpec()
    logprobs: bool = Field(
        False,
        description="ask for token log-probabilities and record each enum or boolean field's confidence "
        "(asked for anyway in a stage with a confidence check); local: the server computes them for every token",
    )

    @field_validator("model_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("expected a SHA-256: 64 hex digits, as `sha256sum FILE` prints them")
        return value.lower() if value else value


EMAIL_FIELDS = ("body", "attachments", "format", "filename")
"""Fields an e-mail document always has: no header may be asked for under these names."""


class ParseOptions(Strict):
    """How a source parses e-mail (``format: email``, or a sniffed ``.txt``); see steadyflow.io.email_parse."""

    headers: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")]] = Field(
        default_factory=lambda: ["subject", "from", "to", "date"],
        max_length=50,
        description="e-mail headers that become document fields (default: subject, from, to, date); "
        "the text is always Subject + body",
    )
    attachments: Literal["names", "text"] = Field(
        "names",
        description="names: list each attachment's name, type and size; text: also append text attachments' content",
    )
    quoted: Literal["keep", "strip"] = Field(
        "keep", description="strip: drop '> ' lines and 'On ... wrote:' blocks of replies"
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        names = [name.lower() for name in value]
        taken = sorted(set(names) & set(EMAIL_FIELDS))
        if taken:
            raise ValueError(f"'{taken[0]}' is a field every e-mail document has; it cannot name a header")
        return list(dict.fromkeys(names))


class FilesSource(ParseOptions):
    """Every file a glob matches (.txt .md .json .eml .html .pdf); one document per file.

    ``format: auto`` chooses by extension (a ``.txt`` that starts with e-mail headers is read as
    e-mail); any other format reads every matched file that way, whatever its extension.
    """

    kind: Literal["files"]
    path: str
    format: Literal["auto", "text", "email", "html", "pdf", "json"] = Field(
        "auto", description="auto: by extension (.txt sniffed for e-mail headers); else every file is parsed this way"
    )


class TableSource(ParseOptions):
    """One document per JSONL line or CSV row; ``format`` says how to parse the ``text_field`` value."""

    kind: Literal["jsonl", "csv"]
    path: str
    text_field: str = "text"
    id_field: str | None = "id"
    format: Literal["text", "email", "html"] = Field(
        "text", description="how the text_field value is parsed (email: a raw message)"
    )


Source = Annotated[FilesSource | TableSource, Field(discriminator="kind")]


RUN_FILES = (
    "decisions.sqlite",
    "decisions.sqlite-wal",
    "decisions.sqlite-shm",
    "decisions.sqlite-journal",
    "runs.sqlite",
    "runs.sqlite-wal",
    "runs.sqlite-shm",
    "runs.sqlite-journal",
    "quarantine.jsonl",
    ".steadyflow.lock",
)
"""Files a run keeps in its output folder: no sink may be written over them."""


def _leaves_folder(path: str) -> bool:
    """True for an absolute path or one that climbs out with ``..``."""
    return (
        path.startswith(("/", "\\", "~"))
        or re.match(r"^[A-Za-z]:", path) is not None
        or ".." in re.split(r"[/\\]", path)
    )


class FileSink(Strict):
    """Outputs as a JSONL or CSV file, one row per document; quarantine.jsonl beside it.

    ``path`` is inside the output folder (``--output``, else ``run.output``, else the path's
    own folder next to the pipeline file). A path that leaves it (absolute, or with ``..``)
    is refused unless ``outside_output: true`` says so explicitly.
    """

    kind: Literal["jsonl", "csv"]
    outside_output: bool = Field(False, description="allow a path outside the output folder (absolute or with '..')")
    path: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _inside_output(cls, value: str, info: ValidationInfo) -> str:
        if Path(value).name in RUN_FILES:
            raise ValueError(f"'{Path(value).name}' is a file the run keeps for itself; give the sink another name")
        if _leaves_folder(value) and not info.data.get("outside_output"):
            raise ValueError(
                f"sink path '{value}' leaves the output folder; set run.output to choose the folder "
                "and give a file name here, or add outside_output: true"
            )
        return value


class SqlSink(Strict):
    """Outputs as rows of a SQL table (SQLite or PostgreSQL), quarantined documents in ``<table>_quarantine``.

    ``url`` is a SQLAlchemy URL; ``${NAME}`` is replaced by the environment variable NAME
    at run time, so passwords stay out of pipeline files.
    """

    kind: Literal["sql"]
    outside_output: bool = Field(
        False, description="allow a SQLite file outside the output folder (absolute or with '..')"
    )
    url: str = Field(
        description="e.g. sqlite:///tickets.sqlite (in the output folder) or postgresql+psycopg://user:${PGPASSWORD}@host/db"
    )
    table: str = Field("outputs", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")

    @field_validator("url")
    @classmethod
    def _known_database(cls, value: str, info: ValidationInfo) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            raise ValueError(
                f"'{scheme}' databases are not supported; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        if "://" not in value:
            raise ValueError("expected a SQLAlchemy URL such as sqlite:///outputs.sqlite")
        if scheme == "sqlite":
            path = value.split(":///", 1)[1] if ":///" in value else ""
            if path.split("?", 1)[0] in ("", ":memory:"):
                raise ValueError(
                    "an in-memory SQLite database is gone when the run ends; give a file, e.g. sqlite:///outputs.sqlite"
                )
            if Path(path).name in RUN_FILES:
                raise ValueError(
                    f"'{Path(path).name}' is a file the run keeps for itself; give the database another name"
                )
            if path and path != ":memory:" and _leaves_folder(path) and not info.data.get("outside_output"):
                raise ValueError(
                    f"SQLite file '{path}' is outside the output folder; give a file name "
                    "(it goes into the output folder), or add outside_output: true"
                )
        return value


Sink = Annotated[FileSink | SqlSink, Field(discriminator="kind")]


class InputSpec(Strict):
    """Checks a document must pass before a stage spends anything on it."""

    field: str = Field("text", description="document field the stage reads")
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(20_000, ge=1)
    required: list[str] = Field(default_factory=list, description="document fields that must be present")
    redact_pii: list[str] | None = Field(
        None,
        description="presidio entity types replaced by placeholders before any provider sees the text, "
        "e.g. [EMAIL_ADDRESS]",
    )
    restore_pii: list[str] = Field(
        default_factory=list, description="output fields whose placeholders are restored to the original values"
    )
    injection: Literal["flag", "quarantine", "off"] = Field(
        "flag", description="prompt-injection signs: record them, quarantine, or ignore"
    )
    on_overflow: Literal["quarantine", "truncate"] = Field(
        "quarantine",
        description="a prompt longer than a model rung's context (less its max_tokens): 'quarantine' skips the rung "
        "(lower rungs still run, else the document is quarantined); 'truncate' cuts the document text to fit",
    )

    @field_validator("injection", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false
        return "off" if value is False else value


class PromptSpec(Strict):
    """A Jinja2 prompt, inline or in a file; its version is its content hash."""

    file: str | None = None
    template: str | None = None
    system: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PromptSpec:
        if (self.file is None) == (self.template is None):
            raise ValueError("give exactly one of 'file' or 'template'")
        return self


class FieldSpec(Strict):
    """One field of a stage's output, with its constraints."""

    type: FieldType | None = None
    description: str | None = None
    enum: list[Scalar] | None = Field(None, min_length=1)
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    items: FieldSpec | None = None
    fields: dict[str, FieldSpec] | None = None
    min_items: int | None = Field(None, ge=0)
    max_items: int | None = Field(None, ge=0)
    optional: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type is None:
            if self.enum is None:
                raise ValueError("a field needs a 'type' (string, integer, number, boolean, enum, list, object)")
            self.type = "enum"
        if self.type == "enum" and not self.enum:
            raise ValueError("type 'enum' needs an 'enum' list")
        if self.type == "list" and self.items is None:
            raise ValueError("type 'list' needs 'items'")
        if self.type == "object" and not self.fields:
            raise ValueError("type 'object' needs 'fields'")
        allowed = _CONSTRAINTS[self.type]
        for name in ("min_length", "max_length", "pattern", "minimum", "maximum", "min_items", "max_items"):
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"'{name}' does not apply to type '{self.type}'")
        return self


_CONSTRAINTS: dict[str, set[str]] = {
    "string": {"min_length", "max_length", "pattern"},
    "integer": {"minimum", "maximum"},
    "number": {"minimum", "maximum"},
    "boolean": set(),
    "enum": set(),
    "list": {"min_items", "max_items"},
    "object": set(),
}


class FieldRule(Strict):
    """A deterministic extractor for one output field: regex, keyword map, default."""

    regex: str | None = None
    group: int | str = 1
    keywords: dict[str, list[str]] | None = None
    default: Any = None


class RulesSpec(Strict):
    """Rules for a stage's output fields, inline or in their own YAML file."""

    fields: dict[str, FieldRule] = Field(min_length=1)


class ModelRung(Strict):
    """Call a model; re-ask on invalid output; retry transient transport errors."""

    model: str
    reasks: int = Field(1, ge=0, le=10, description="re-asks with the validation error after the first answer")
    retries: int = Field(1, ge=0, le=10, description="retries of 429/5xx/timeouts, honouring Retry-After")
    vote: int | None = Field(
        None,
        ge=2,
        le=15,
        description="ask N times (sampled at the model's temperature, or 0.8 if it is 0) and keep the majority "
        "answer: the share of votes each enum or boolean value won is its confidence (for endpoints without "
        "log-probabilities); every call is paid and recorded",
    )
    hedge: HedgeSpec | None = Field(
        None,
        description="if this call has not answered in time, also ask the ladder's next model; the first valid "
        "answer wins, the other call is cancelled, both are paid and recorded",
    )

    @model_validator(mode="after")
    def _hedge_or_vote(self) -> ModelRung:
        if self.hedge is not None and self.vote is not None:
            raise ValueError("a rung either votes or hedges, not both")
        return self


class RulesRung(Strict):
    """Deterministic extraction by regex and keyword maps."""

    rules: str | RulesSpec


class DefaultRung(Strict):
    """A static output, flagged for human review; never fails."""

    default: dict[str, Any]
    review: bool = True


def _rung_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("model", "rules", "default", "cache"):
            if kind in value:
                return kind
        return None
    return type(value).__name__.removesuffix("Rung").lower() or None


Rung = Annotated[
    Annotated[ModelRung, Tag("model")]
    | Annotated[RulesRung, Tag("rules")]
    | Annotated[DefaultRung, Tag("default")]
    | Annotated[CacheRung, Tag("cache")],
    Discriminator(
        _rung_kind,
        custom_error_type="rung_kind",
        custom_error_message="a rung needs one of the keys 'model', 'cache', 'rules' or 'default'",
    ),
]


class _StageBase(Strict):
    id: str = Field(pattern=IDENT)
    description: str = ""
    input: InputSpec = InputSpec()
    output: dict[str, FieldSpec] | None = Field(None, min_length=1)
    output_model: str | None = Field(None, description="'package.module:Class', a pydantic model")

    @model_validator(mode="after")
    def _one_output(self) -> _StageBase:
        if (self.output is None) == (self.output_model is None):
            raise ValueError("give exactly one of 'output' or 'output_model'")
        return self


class AiStage(_StageBase):
    """A deterministic sandwich around a model call."""

    kind: Literal["ai"]
    prompt: PromptSpec
    validate_: list[CheckSpec] = Field(
        default_factory=list, alias="validate", description="checks on each output, in order"
    )
    ladder: list[Rung] = Field(min_length=1)
    route: RouteSpec | None = None
    deadline_s: float | None = Field(None, gt=0, description="per document: after this long, model rungs are skipped")


class RulesStage(_StageBase):
    """A stage with no model at all: rules, then an optional default, each output through the stage's checks."""

    kind: Literal["rules"]
    rules: str | RulesSpec
    validate_: list[CheckSpec] = Field(
        default_factory=list, alias="validate", description="checks on each output, in order (reask acts as escalate)"
    )
    default: dict[str, Any] | None = None
    review: bool = True


class PluginStage(_StageBase):
    """A stage kind registered with ``@stage("name")`` (or the ``steadyflow.stages`` entry points).

    Its function makes the output from ``with:`` and the document; then the optional default,
    each output through the stage's checks, as in a ``rules`` stage.
    """

    kind: str = Field(
        pattern=IDENT,
        description="the name a plugin registered with @stage",
        json_schema_extra={
            "not": {"enum": ["ai", "rules"]}
        },  # so an editor's oneOf picks AiStage or RulesStage for those
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the plugin's parameters")
    validate_: list[CheckSpec] = Field(
        default_factory=list, alias="validate", description="checks on each output, in order (reask acts as escalate)"
    )
    default: dict[str, Any] | None = None
    review: bool = True


BUILTIN_STAGE_KINDS = ("ai", "rules")
_PLUGIN_TAG = "a @stage name"
"""The union tag of :class:`PluginStage`, as an unknown-kind message lists it: "(expected ai, rules, a @stage name)"."""
_BUILTIN_ONLY_KEYS = frozenset({"prompt", "ladder", "route", "deadline_s", "rules"})


def _stage_kind(value: Any) -> str | None:
    """The union member of a stage: 'ai', 'rules', else a plugin stage for any other name.

    A mapping with keys only a built-in kind takes (``prompt``, ``ladder``, ``rules``) under another
    kind is a misspelt built-in kind (``kind: ia``): its own kind is returned, an unknown tag, so the
    error says "unknown kind 'ia' (did you mean 'ai'?)" instead of listing the keys a plugin stage lacks.
    """
    if not isinstance(value, dict):
        return {"AiStage": "ai", "RulesStage": "rules", "PluginStage": _PLUGIN_TAG}.get(type(value).__name__)
    kind = value.get("kind")
    if not isinstance(kind, str):
        return None
    if kind in BUILTIN_STAGE_KINDS:
        return kind
    return kind if _BUILTIN_ONLY_KEYS & set(value) else _PLUGIN_TAG


Stage = Annotated[
    Annotated[AiStage, Tag("ai")] | Annotated[RulesStage, Tag("rules")] | Annotated[PluginStage, Tag(_PLUGIN_TAG)],
    Discriminator(_stage_kind),
]


class RunSettings(Strict):
    """How a run is executed; every value can be overridden from the CLI."""

    output: str | None = Field(
        None,
        description="folder of outputs, quarantine and decisions.sqlite, relative to this file; --output replaces it",
    )
    concurrency: int = Field(8, ge=1, le=1024, description="documents in flight per model")
    chunk_size: int = Field(50, ge=1, le=100_000, description="documents per Prefect task")
    cache_path: str | None = Field(
        None, description="SQLite file of the output cache; default: <user cache>/steadyflow/outputs.sqlite"
    )
    task_runner: Literal["local", "dask"] = Field(
        "local",
        description="'local': stages run in the flow's process; 'dask': chunks run on a Dask cluster (prefect-dask)",
    )
    dask_address: str | None = Field(
        None, description="scheduler of an existing Dask cluster; default: a local cluster of worker processes"
    )
    dask_workers: int = Field(2, ge=1, le=256, description="worker processes of the local Dask cluster")
    check_workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="processes that run input redaction and CPU-heavy checks (presidio, embeddings, Guards) in "
        "batches while model calls go on; default: one per core; 0: in the run's own process, one document at a time",
    )


class AuditSettings(Strict):
    """Where runs keep their tamper-evident audit trail (one store across runs and output folders)."""

    enabled: bool = Field(
        True, description="false: this pipeline's runs write no audit trail (their folder's records stay)"
    )
    url: str | None = Field(
        None,
        description="SQLAlchemy URL of the audit store, e.g. postgresql+psycopg://audit:${PGPASSWORD}@db/audit; "
        "a relative sqlite:/// path is relative to this file; default: $STEADYFLOW_AUDIT_URL, else "
        "sqlite:///<user data>/steadyflow/audit.sqlite",
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        le=36500,
        description="purge records older than this after each run (a store shared by pipelines keeps each "
        "pipeline's records as long as the longest retention asks); default: kept forever",
    )

    @field_validator("url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql") or "://" not in value:
            raise ValueError("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        if scheme == "sqlite" and value.split(":///", 1)[-1].split("?", 1)[0] in ("", ":memory:"):
            raise ValueError(
                "an in-memory audit store is gone when the run ends; give a file, e.g. sqlite:///audit.sqlite"
            )
        return value


class TelemetrySettings(Strict):
    """Where a run sends OpenTelemetry traces: off unless an endpoint is named here or in the environment."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector, e.g. http://127.0.0.1:6006 (its /v1/traces is added); default: "
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT, else no traces",
    )
    project: str | None = Field(
        None,
        pattern=IDENT,
        description="the trace backend's project (service.name and openinference.project.name); default: the pipeline",
    )
    include_text: bool = Field(
        False,
        description="put each document's text and output in its span (they leave the machine); refused with "
        "redact_pii, whose documents may leave only redacted",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018  # raises on a port that is no number or out of range
        except ValueError:
            raise ValueError("its port is not a number from 1 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
            raise ValueError("give an http:// or https:// URL, e.g. http://127.0.0.1:6006")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "no user or password in the URL: a collector's credentials go in OTEL_EXPORTER_OTLP_HEADERS"
            )
        return value


def _scorer_name(value: str) -> str:
    from steadyflow.core.scorer_names import parse_scorer

    parse_scorer(value)  # ScorerError is a ValueError: the loader reports it at this key
    return value


def _labelled_field(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w-]*\.[A-Za-z_][\w.]*", value):
        raise ValueError(f"'{value}': name a labelled field as 'stage.field'")
    return value


class EvalSettings(Strict):
    """How ``steadyflow eval`` scores this pipeline's outputs against labelled datasets."""

    scorers: dict[Annotated[str, AfterValidator(_labelled_field)], Annotated[str, AfterValidator(_scorer_name)]] = (
        Field(
            default_factory=dict,
            description="scorer per 'stage.field': exact, tolerance[:0.5|:2%], set, normalised, fuzzy[:0.8], "
            "embedding[:0.7]; default by the field's type (exact for enums, booleans and integers, tolerance:1% "
            "for numbers, set for lists, normalised for strings); a dataset's own scorers line wins",
        )
    )


class Pipeline(Strict):
    """A steadyflow pipeline file."""

    pipeline: str = Field(pattern=IDENT, description="the pipeline's name")
    version: str = "0.0.0"
    description: str = ""
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    source: Source | None = None
    stages: list[Stage] = Field(min_length=1)
    sink: Sink | None = None
    run: RunSettings = RunSettings()
    budget: BudgetSpec | None = None
    eval: EvalSettings | None = Field(None, description="how `steadyflow eval` scores outputs (see docs)")
    audit: AuditSettings = AuditSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    plugins: list[str] = Field(
        default_factory=list,
        description="Python modules to import (relative to this file's folder) that register @validator checks",
    )

    def logprob_models(self) -> set[str]:
        """Models whose answers need token log-probabilities.

        Those with ``logprobs: true``, and every model rung of a stage with a confidence check. A local
        model server computes them only when asked to, since they cost it time and memory on every token.
        """
        names = {name for name, spec in self.models.items() if spec.logprobs}
        for stage in self.stages:
            if isinstance(stage, AiStage) and any(check.check == "confidence" for check in stage.validate_):
                names |= {rung.model for rung in stage.ladder if isinstance(rung, ModelRung)}
        return names
