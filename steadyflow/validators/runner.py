"""Run a stage's checks on an output and turn failures into on_fail actions.

``reask`` checks also run *inside* instructor's parsing (see
:meth:`StageChecks.response_model`): a failure there raises a validation error
whose message goes back to the model, within the rung's ``reasks``. The document
they check travels with the call, as pydantic's validation context: the ladder
passes ``{CHECK_RUN: CheckRun(...)}`` to the model client, which hands it to
instructor (see :mod:`steadyflow.providers.openai_compat`); no global state. After a
rung produced an output, :meth:`StageChecks.apply` runs every check once more,
records a verdict for each, and decides: accept (after any fix or filter),
escalate to the next rung, or quarantine the document.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from steadyflow.audit.records import Verdict, validation_summary
from steadyflow.spec.validation import (
    BannedCheck,
    CheckSpec,
    CompetitorsCheck,
    FormatCheck,
    PluginCheck,
    SecretsCheck,
)
from steadyflow.validators import business, safety, semantic, structural
from steadyflow.validators.base import Context, Finding, Plugin, plugin, plugin_names, set_path

CheckFn = Callable[[dict[str, Any], Context], Finding]
Outcome = Literal["accept", "escalate", "quarantine"]
_BUILTIN: dict[str, Callable[..., Finding]] = {
    "compare": structural.compare,
    "required_if": structural.required_if,
    "grounded": semantic.grounded,
    "sum": semantic.sum_check,
    "date_order": semantic.date_order,
    "similar": semantic.similar,
    "confidence": semantic.confidence,
    "rule": business.rule,
    "pii": safety.pii,
}


class UnknownCheck(Exception):
    """A ``check:`` name that is neither built in nor registered by a plugin."""


class CheckCrashed(Exception):
    """A check raised instead of giving a finding: no output can be vouched for, the document is quarantined.

    Carries the check's name and the exception's type only: an exception's text may quote the
    document or the output (a ValidationError echoes ``input_value``), so it is never kept.
    """

    def __init__(self, check: CompiledCheck, error: BaseException, rung: int | None = None, took: float = 0.0) -> None:
        self.check, self.error_type = check.name, type(error).__name__
        self.reason = f"internal error in check '{check.name}': {self.error_type}"
        super().__init__(self.reason)
        self.verdict = Verdict(
            check.name, check.layer, False, "quarantine", f"check raised {self.error_type}", rung, took
        )

    @classmethod
    def of(cls, verdict: Verdict) -> CheckCrashed:
        """The crash a verdict records (a check worker sends the verdict back, not the exception)."""
        error_type = verdict.message.removeprefix("check raised ") or "Exception"
        crash = cls.__new__(cls)
        crash.check, crash.error_type, crash.verdict = verdict.check, error_type, verdict
        crash.reason = f"internal error in check '{verdict.check}': {error_type}"
        Exception.__init__(crash, crash.reason)
        return crash


@dataclass
class CheckRun:
    """What the checks inside instructor's parsing need: the document's context and where verdicts go."""

    context: Context
    rung: int
    verdicts: list[Verdict] = field(default_factory=list)
    crashed: CheckCrashed | None = None
    """A check that raised while instructor parsed: the ladder quarantines the document after the call."""
    passed: dict[int, tuple[dict[str, Any], float]] = field(default_factory=dict)
    """Re-ask checks that passed while instructor parsed, by position: the output they passed and their time.

    :meth:`StageChecks.apply` does not run them again on that same output (a CEL rule is the
    loop's dearest check; built-in checks are functions of the output and the document, so the
    verdict is the one it would give). Plugin checks run again.
    """


HEAVY = frozenset({"pii", "similar", "banned", "competitors", "secrets", "format"})
"""Checks worth a check worker's time: spaCy (pii), ONNX embeddings (similar), guardrails Guards.

The rest (CEL rules, comparisons, fuzzy matching, plugins) take well under a millisecond, or are a
user's code that only this process has imported, and run where the output is.
"""


class CheckRunner(Protocol):
    """Runs a run of heavy checks elsewhere (the check workers, validators/pool.py) and gives back where they got."""

    async def check(self, key: str, specs: list[CheckSpec], state: Segment, context: Context, rung: int) -> Segment:
        """Run the checks ``specs`` (``key``: their identity) from ``state``; where they got."""
        ...


@dataclass
class CheckGroup:
    """Consecutive checks of a stage that run in the same place (heavy: a check worker, when there are some)."""

    heavy: bool
    checks: list[CompiledCheck]
    specs: list[CheckSpec]
    key: str = ""
    """The checks' identity for a check worker, which compiles them once per key."""

    def __post_init__(self) -> None:
        self.key = spec_key(self.specs)


def spec_key(specs: list[CheckSpec]) -> str:
    """A short hash of check specs as JSON."""
    return hashlib.sha256(json.dumps([s.model_dump(mode="json") for s in specs]).encode()).hexdigest()[:16]


CHECK_RUN = "steadyflow.check_run"
"""The key of the :class:`CheckRun` in the validation context a model call is given."""


@dataclass
class CompiledCheck:
    """One check, ready to run."""

    name: str
    layer: str
    on_fail: str
    run: CheckFn
    position: int = 0
    """Where the check is in its stage's ``validate:`` list."""
    builtin: bool = True
    """Not a plugin: a function of the output and the document only, so its verdict on an output can be reused."""


def compile_check(spec: CheckSpec) -> CompiledCheck:
    """Bind a check spec to its implementation (Guards are built here, once per stage)."""
    if isinstance(spec, BannedCheck | CompetitorsCheck | SecretsCheck | FormatCheck):
        guard = safety.make_guard(spec)
        run: CheckFn = partial(_guard_run, guard, safety.guard_fields(spec), spec.message)
    elif isinstance(spec, PluginCheck):
        function = plugin(spec.check)
        if function is None:
            builtin = ", ".join(sorted([*_BUILTIN, "banned", "competitors", "format", "secrets"]))
            raise UnknownCheck(
                f"unknown check '{spec.check}' "
                f"(built in: {builtin}; plugins: {', '.join(plugin_names()) or 'none registered'})"
            )
        run = partial(_plugin_run, function, spec.with_)
        return CompiledCheck(spec.check, spec.layer, spec.on_fail, run, builtin=False)
    else:
        run = partial(_BUILTIN[spec.check], spec)
    return CompiledCheck(spec.check, spec.layer, spec.on_fail, run)


def _deferred(spec: CheckSpec) -> CompiledCheck:
    """``spec`` compiled at its first run in this process (a check worker runs it, so that may be never)."""
    compiled: list[CompiledCheck] = []

    def run(output: dict[str, Any], context: Context) -> Finding:
        if not compiled:
            compiled.append(compile_check(spec))
        return compiled[0].run(output, context)

    return CompiledCheck(spec.check, spec.layer, spec.on_fail, run)


def _guard_run(
    guard: Any, fields: list[str] | None, message: str | None, output: dict[str, Any], context: Context
) -> Finding:
    return safety.guard_check(guard, fields, message, output)


def _plugin_run(function: Plugin, params: dict[str, Any], output: dict[str, Any], context: Context) -> Finding:
    return function(params, output, context)


def run_check(
    check: CompiledCheck, output: dict[str, Any], context: Context, rung: int | None = None
) -> tuple[Finding, float]:
    """Run one check; raise :class:`CheckCrashed` (type only, never the text) if it raises.

    A check that raises is no verdict: treating it as a failure would let ``on_fail: noop`` or
    ``filter`` accept an output nobody checked, and a RecursionError or MemoryError from a hostile
    document is no judgement on the output. The ladder quarantines the document and the batch goes on.
    """
    started = time.perf_counter()
    try:
        finding = check.run(output, context)
    except Exception as exc:  # a plugin's bug, a library error, a hostile document's RecursionError
        raise CheckCrashed(check, exc, rung, round((time.perf_counter() - started) * 1000, 3)) from None
    if not isinstance(finding, Finding):  # a plugin returned something else: a bug, not a verdict
        raise CheckCrashed(check, TypeError(), rung)
    return finding, round((time.perf_counter() - started) * 1000, 3)


@dataclass
class Applied:
    """The outcome of a stage's checks on one output."""

    output: BaseModel | None
    verdicts: list[Verdict]
    outcome: Outcome
    reason: str | None = None
    review: bool = False
    """A check with ``on_fail: review`` failed: the output is accepted and flagged for a person."""


class StageChecks:
    """The compiled ``validate:`` list of one stage."""

    def __init__(self, specs: list[CheckSpec], pool: CheckRunner | None = None) -> None:
        self.specs = specs
        self.pool = pool if any(spec.check in HEAVY for spec in specs) else None
        """Where runs of heavy checks go (None: every check runs in this process)."""
        # with workers, a heavy check runs here only as a re-ask check (in instructor's parse): the others are
        # compiled where they run, so that this process need not load guardrails for them
        self.checks = [
            _deferred(spec) if self.pool and spec.check in HEAVY and spec.on_fail != "reask" else compile_check(spec)
            for spec in specs
        ]
        for position, check in enumerate(self.checks):
            check.position = position
        self.segments: list[CheckGroup] = []
        """The checks in runs of heavy and light ones, in their declared order."""
        pairs = itertools.groupby(zip(specs, self.checks, strict=True), key=lambda pair: pair[1].name in HEAVY)
        for heavy, group in pairs:
            members = list(group)
            self.segments.append(CheckGroup(heavy, [c for _, c in members], [s for s, _ in members]))
        self._models: dict[type[BaseModel], type[BaseModel]] = {}

    @property
    def wants_confidence(self) -> bool:
        """Whether a check of this stage judges the model's confidence (so model rungs ask for it)."""
        return any(c.name == "confidence" for c in self.checks)

    def response_model(self, base: type[BaseModel]) -> type[BaseModel]:
        """``base`` plus the reask checks as a model validator, so instructor re-asks with their messages."""
        reask = [c for c in self.checks if c.on_fail == "reask"]
        if not reask:
            return base
        if base not in self._models:
            self._models[base] = _with_checks(base, reask)
        return self._models[base]

    async def apply(
        self,
        output: BaseModel,
        context: Context,
        rung: int,
        model: type[BaseModel],
        parsed: CheckRun | None = None,
    ) -> Applied:
        """Every check on ``output``, in order; fixes and filters accumulate, escalate and quarantine stop.

        ``parsed`` is the model call's :class:`CheckRun`: re-ask checks that passed there on this
        very output are not run again.

        Runs of CPU-heavy checks (:data:`HEAVY`) go to the check workers when the stage has them,
        with the output as the checks before them left it; the others run here. Either way each
        check runs the same function on the same data, so the outcome is the same.
        """
        state = Segment(output.model_dump(mode="json"))
        for segment in self.segments:
            if segment.heavy and self.pool is not None:
                state = await self.pool.check(segment.key, segment.specs, state, context, rung)
            else:
                state = run_segment(segment.checks, state, context, rung, parsed.passed if parsed else None)
            if state.crashed is not None:
                raise CheckCrashed.of(state.crashed)
            if state.stop is not None:
                outcome, reason = state.stop
                return Applied(None, state.verdicts, outcome, reason)
        try:
            final = model.model_validate(state.data)
        except ValidationError as exc:
            message = f"output no longer fits the schema after fixes: {validation_summary(exc)}"
            state.verdicts.append(Verdict("schema", "structural", False, "escalate", message, rung))
            return Applied(None, state.verdicts, "escalate", message)
        state.verdicts.insert(0, Verdict("schema", "structural", True, "pass", rung=rung))
        return Applied(final, state.verdicts, "accept", review=state.review)


@dataclass
class Segment:
    """Where a stage's checks have got to on one output: the output as fixed so far, verdicts, and a stop."""

    data: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    review: bool = False
    stop: tuple[Outcome, str] | None = None
    """('escalate' | 'quarantine', reason): a check said so, the checks after it do not run."""
    crashed: Verdict | None = None
    """A check raised (see :class:`CheckCrashed`): its verdict, for the ladder to quarantine the document."""


def run_segment(
    checks: list[CompiledCheck],
    state: Segment,
    context: Context,
    rung: int,
    passed: dict[int, tuple[dict[str, Any], float]] | None = None,
) -> Segment:
    """Run ``checks`` in order from ``state``, in this process (a check worker calls it too).

    ``passed``: re-ask checks that already passed on the output being checked (see :attr:`CheckRun.passed`).
    """
    data, verdicts, review = state.data, list(state.verdicts), state.review
    for check in checks:
        # a plugin may read what changes after the parse (the answer's confidence), or anything else: run it again
        seen = passed.get(check.position) if passed and check.on_fail == "reask" and check.builtin else None
        if seen is not None and seen[0] == data:
            verdicts.append(Verdict(check.name, check.layer, True, "pass", rung=rung, duration_ms=seen[1]))
            continue
        try:
            finding, took = run_check(check, data, context, rung)
        except CheckCrashed as crash:
            return Segment(data, [*verdicts, crash.verdict], review, crashed=crash.verdict)
        if finding.passed:
            verdicts.append(Verdict(check.name, check.layer, True, "pass", rung=rung, duration_ms=took))
            continue
        action = "escalate" if check.on_fail == "reask" else check.on_fail  # re-asks are used up by now
        if action == "fix":
            if finding.fixed is None:
                action = "escalate"
            else:
                data = finding.fixed
        elif action == "filter":
            for name in finding.fields:
                data = set_path(data, name, None)
        elif action == "review":
            review = True
        verdicts.append(Verdict(check.name, check.layer, False, action, finding.message, rung, took))
        if action in ("escalate", "quarantine"):
            outcome: Outcome = "escalate" if action == "escalate" else "quarantine"
            return Segment(data, verdicts, review, (outcome, f"{check.name}: {finding.message}"))
    return Segment(data, verdicts, review)


def _with_checks(base: type[BaseModel], reask: list[CompiledCheck]) -> type[BaseModel]:
    class Checked(base):  # type: ignore[valid-type, misc]
        model_config = ConfigDict(title=base.model_config.get("title") or base.__name__)

        @model_validator(mode="after")
        def _steadyflow_checks(self, info: ValidationInfo) -> Any:
            current = info.context.get(CHECK_RUN) if isinstance(info.context, dict) else None
            if not isinstance(current, CheckRun):  # validated outside a model call (a cache hit, a test): no re-ask
                return self
            data = self.model_dump(mode="json")
            failures = []
            for check in reask:
                try:
                    finding, took = run_check(check, data, current.context, current.rung)
                except CheckCrashed as crash:
                    # raised here it would reach instructor, which would call it a failed model call
                    current.crashed = current.crashed or crash
                    return self
                if finding.passed:
                    current.passed[check.position] = (data, took)
                else:
                    current.verdicts.append(
                        Verdict(check.name, check.layer, False, "reask", finding.message, current.rung, took)
                    )
                    failures.append(finding.message)
            if failures:
                raise ValueError("; ".join(failures))
            return self

    Checked.__name__ = Checked.__qualname__ = base.__name__
    return Checked


def restore_fields(
    output: BaseModel, names: list[str], originals: dict[str, str], model: type[BaseModel]
) -> tuple[BaseModel, Verdict]:
    """Put redacted PII back into the fields a pipeline allows; keep placeholders if that breaks the schema."""
    from steadyflow.validators.pii import restore

    data = output.model_dump(mode="json")
    for name in names:
        if name in data:
            data = set_path(data, name, restore(data[name], originals))
    try:
        return model.model_validate(data), Verdict(
            "restore_pii", "safety", True, "fix", f"restored placeholders in: {', '.join(names)}"
        )
    except ValidationError:
        return output, Verdict(
            "restore_pii", "safety", False, "noop", "restoring would break the schema: placeholders kept"
        )
