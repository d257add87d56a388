"""Run stages over documents: the deterministic sandwich, without Prefect.

``flows/`` wraps :meth:`Engine.run_stage` in Prefect tasks; everything about
what happens to a document lives here, so it can be tested and reused alone.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import jinja2

from steadyflow.audit.records import DecisionRecord, document_hash, fingerprint, output_hash, text_hash
from steadyflow.core.document import Document
from steadyflow.core.vocabulary import Status
from steadyflow.providers.confidence import scored_fields
from steadyflow.providers.local_model import cache_dir
from steadyflow.providers.openai_compat import CLIENTS, OpenAICompatClient
from steadyflow.spec.errors import SpecError
from steadyflow.spec.loader import CompiledStage, LoadedPipeline
from steadyflow.spec.models import AiStage, ModelRung
from steadyflow.spec.resilience import AdaptiveSpec, CacheRung
from steadyflow.stages.adaptive import Estimates, HedgeBudget
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import CacheContext, OutputCache
from steadyflow.stages.checks import check_pipeline
from steadyflow.stages.document import check_input, stage_text
from steadyflow.stages.ladder import Ladder, LadderResult, Sandwich, build_ladder, internal_reason, walk
from steadyflow.stages.routing import route
from steadyflow.validators.base import Context
from steadyflow.validators.inputs import prepare
from steadyflow.validators.pool import CheckPool, CheckWorkerError, pool_models
from steadyflow.validators.runner import HEAVY, StageChecks, restore_fields


@dataclass
class Engine:
    """Everything a run shares: the pipeline, its model clients, the run id."""

    pipeline: LoadedPipeline
    run_id: str
    concurrency: int
    clients: dict[str, OpenAICompatClient] = field(default_factory=dict)
    checks: dict[str, StageChecks] = field(default_factory=dict)
    ladders: dict[str, Ladder] = field(default_factory=dict)
    """Each stage's rungs, built once: every stage kind is a ladder walked by the same loop."""
    budget: Budget = field(default_factory=Budget)
    cache: OutputCache | None = None
    slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    """Documents of a stage in flight at once, over every chunk sharing this engine (see :meth:`run_stage`)."""
    digest: Callable[[str], str] | None = None
    """The decision log's keyed digest: records keep a fingerprint of each output (None: they keep none)."""
    estimates: dict[str, Estimates] = field(default_factory=dict)
    """Online estimates per stage that routes adaptively or hedges (see stages/adaptive.py)."""
    hedges: dict[str, dict[int, HedgeBudget]] = field(default_factory=dict)
    pool: CheckPool | None = None
    """Worker processes for input redaction and heavy checks (None: they run in this process)."""
    _closed: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        pipeline: LoadedPipeline,
        run_id: str,
        concurrency: int,
        base_urls: dict[str, str] | None = None,
        model_ids: dict[str, str] | None = None,
        budget: Budget | None = None,
        cache: OutputCache | None = None,
        digest: Callable[[str], str] | None = None,
        check_workers: int | None = None,
    ) -> Engine:
        """Build clients for the models the ladders use (within the running event loop).

        ``check_workers`` processes run input redaction and heavy checks (None: as the pipeline's
        ``run.check_workers`` says, by default one per core; 0: none, they run in this process).

        ``base_urls`` and ``model_ids`` come from what is found at run time: the local
        model servers and the GGUF files they run (recorded as the model of a decision).
        Raises :class:`SpecError` with every problem :func:`check_pipeline` finds (it imports the
        pipeline's plugins, which register its checks and stage kinds).
        """
        used = {
            r.model for s in pipeline.spec.stages if isinstance(s, AiStage) for r in s.ladder if hasattr(r, "model")
        }
        clients = {
            name: CLIENTS[spec.provider](
                name, spec, concurrency, (base_urls or {}).get(name), (model_ids or {}).get(name)
            )
            for name, spec in pipeline.spec.models.items()
            if name in used
        }
        problems = check_pipeline(pipeline)  # the one check `validate`, `run` and `try` make too
        if problems:
            raise SpecError(problems)
        pool = _check_pool(pipeline, check_workers)
        checks = {s.id: StageChecks(s.validate_, pool) for s in pipeline.spec.stages}
        ladders = {stage.id: build_ladder(stage) for stage in pipeline.stages}
        budget = budget or Budget(pipeline.spec.budget)
        estimates, hedges = _adaptive(pipeline)
        if pool is not None:  # last: nothing above can fail and leave its processes behind
            pool.start()
        return cls(
            pipeline=pipeline,
            run_id=run_id,
            concurrency=concurrency,
            clients=clients,
            checks=checks,
            ladders=ladders,
            budget=budget,
            cache=cache,
            digest=digest,
            estimates=estimates,
            hedges=hedges,
            pool=pool,
        )

    async def aclose(self) -> None:
        """Close every client and stop the check workers; keep the routing estimates of stages that ask for it."""
        for client in self.clients.values():
            await client.aclose()
        if self.pool is not None:
            await self.pool.aclose()
        for stage_id, estimates in self.estimates.items():
            if estimates.spec.keep:
                estimates.save(estimates_path(self.pipeline.spec.pipeline, stage_id))

    def _record(
        self, stage: CompiledStage, doc: Document, text: str, result: LadderResult, started: tuple[float, float]
    ) -> DecisionRecord:
        """The document's record; ``started`` is when its work began (``perf_counter``, Unix time)."""
        client = self.clients.get(result.model or "")
        spec = self.pipeline.spec
        elapsed = time.perf_counter() - started[0]
        output = doc.outputs.get(stage.id) if doc.quarantined is None else None
        return DecisionRecord(
            run_id=self.run_id,
            doc_id=doc.id,
            stage_id=stage.id,
            pipeline=spec.pipeline,
            pipeline_version=spec.version,
            input_hash=text_hash(text),
            prompt_version=stage.prompt.version if stage.prompt else None,
            status=result.status,
            rung=result.rung,
            rung_label=result.label,
            model=client.model if client else None,
            parameters=client.parameters() if client else {},
            review=result.review,
            reason=result.reason,
            attempts=result.attempts,
            latency_ms=round(elapsed * 1000, 2),
            verdicts=result.verdicts,
            route=result.route,
            confidence=result.confidence,
            source_ref=f"line {doc.line}" if doc.line is not None else ("api" if doc.source == "api" else "file"),
            document_hash=document_hash(doc.text, doc.fields),
            outputs=self._fingerprint(stage, output),
            output_hash=output_hash(output) if output is not None else None,
            started_at=started[1],
        )

    def _fingerprint(self, stage: CompiledStage, output: dict[str, Any] | None) -> dict[str, Any] | None:
        if output is None or self.digest is None:
            return None
        closed = self._closed.get(stage.id)
        if closed is None:  # a schema per stage, not per document
            closed = self._closed[stage.id] = scored_fields(stage.output_model.model_json_schema())
        return fingerprint(output, closed, self.digest, numbers=not stage.spec.input.redact_pii)

    async def _run_one(self, stage: CompiledStage, doc: Document, queued_ms: float = 0.0) -> DecisionRecord:
        """One document through one stage; never raises, so one document can never stop the batch.

        Its record's ``latency_ms`` is the time from here to its end; ``queued_ms``, the time it
        waited for a slot before, is recorded apart as ``queue_ms``.

        Whatever goes wrong for this document (a bug, a RecursionError or MemoryError from a hostile
        document, a library error) quarantines it with the error's type and where it happened, and
        is recorded like any other outcome. The exception's text is never kept: it may quote the document.
        """
        started = time.perf_counter(), time.time()  # both read at once: a wall time worked out later can be late
        text = ""
        try:
            text = stage_text(doc, stage.spec.input) or ""
            result = await self._decide(stage, doc, text)
            output = result.output.model_dump(mode="json") if result.output is not None else None
        except Exception as exc:
            result, output = (
                LadderResult(
                    None, Status.QUARANTINED, reason=internal_reason(f"stage '{stage.id}' at {_origin(exc)}", exc)
                ),
                None,
            )
        if output is not None:
            doc.outputs[stage.id] = output
            doc.rungs[stage.id] = result.label or result.status
            doc.review = doc.review or result.review
        else:
            doc.quarantined = (stage.id, result.reason or "no output")
        record = self._record(stage, doc, text, result, started)
        record.queue_ms = round(queued_ms, 2)
        return record

    async def _decide(self, stage: CompiledStage, doc: Document, text: str) -> LadderResult:
        reason = check_input(doc, stage.spec.input)
        if reason is not None:
            return LadderResult(None, Status.QUARANTINED, reason=reason)
        if isinstance(stage.spec, AiStage):
            return await self._ai_stage(stage, doc, text)
        # rules and plugin stages: their rungs and their checks, on the text as it is (no model sees it)
        context = Context(text, doc.id, doc.fields, self._run_facts(stage))
        return await walk(self.ladders[stage.id], Sandwich(text, [], {}, self.checks[stage.id], context))

    def _run_facts(self, stage: CompiledStage) -> dict[str, str]:
        """What a check's ``run`` holds: the run id, the pipeline, its version and the stage."""
        spec = self.pipeline.spec
        return {"id": self.run_id, "pipeline": spec.pipeline, "version": spec.version, "stage": stage.id}

    async def _ai_stage(self, stage: CompiledStage, doc: Document, text: str) -> LadderResult:
        spec = stage.spec
        if stage.prompt is None or not isinstance(spec, AiStage):  # compile_stages guarantees both
            raise TypeError(f"stage {stage.id} is not a compiled ai stage")
        # everything a prompt can render is redacted (text, id, fields, earlier outputs: see validators/inputs.py);
        # the prompt, the checks and the rules rung read only these; originals come back, where the pipeline
        # allows it, only after every check
        if self.pool is not None and spec.input.redact_pii:
            prepared = await self.pool.prepare(spec.input, text, doc.id, doc.fields, doc.outputs)
        else:
            prepared = prepare(spec.input, text, doc.id, doc.fields, doc.outputs)
        if prepared.quarantine is not None:
            return LadderResult(None, Status.QUARANTINED, reason=prepared.quarantine, verdicts=prepared.verdicts)
        variables: dict[str, Any] = {
            "text": prepared.text,
            "doc": prepared.fields,
            "id": prepared.doc_id,
            "outputs": prepared.outputs,
        }
        try:
            user = prepared.scrub(stage.prompt.render(variables))  # a value a template joined from parts is hidden too
        except jinja2.TemplateError as exc:
            return LadderResult(
                None, Status.QUARANTINED, reason=f"prompt cannot be rendered for this document: {type(exc).__name__}"
            )
        messages = [{"role": "system", "content": stage.prompt.system}, {"role": "user", "content": user}]
        prompt = stage.prompt

        def render(
            cut: str,
        ) -> list[dict[str, str]]:  # the same prompt around a shorter document (input.on_overflow: truncate)
            user = prepared.scrub(prompt.render({**variables, "text": cut}))
            return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]

        run = self._run_facts(stage)
        context = Context(prepared.text, prepared.doc_id, prepared.fields, run, prepared.pii, prepared.injection)
        sandwich = Sandwich(prepared.text, messages, self.clients, self.checks[stage.id], context, self.budget)
        sandwich.render, sandwich.overflow = render, spec.input.on_overflow
        if spec.deadline_s is not None:
            sandwich.deadline = time.monotonic() + spec.deadline_s
        estimates, klass = self._route(stage, spec, sandwich)
        if self.cache is not None and any(isinstance(r, CacheRung) for r in spec.ladder):
            scope = f"{self.pipeline.spec.pipeline}/{stage.id}/{stage.prompt.version}"
            semantic = any(isinstance(r, CacheRung) and r.cache == "semantic" for r in spec.ladder)
            sandwich.cache = CacheContext(
                self.cache, scope, text_hash(prepared.text), prepared.text, self.clients, semantic
            )
        result = await walk(self.ladders[stage.id], sandwich)
        if estimates is not None:  # what this document did teaches the next ones of its class
            accepted = result.rung if result.status == Status.VALIDATED else None
            estimates.observe(klass, result.attempts, accepted, result.verdicts)
        if sandwich.route is not None:
            result.route = {k: v for k, v in asdict(sandwich.route).items() if v is not None}
        result.verdicts[:0] = prepared.verdicts
        result.review = result.review or bool(prepared.injection)  # a person should see what tried to steer the model
        if result.output is not None and prepared.originals and spec.input.restore_pii:
            result.output, verdict = restore_fields(
                result.output, spec.input.restore_pii, prepared.originals, stage.output_model
            )
            result.verdicts.append(verdict)
        return result

    def _route(self, stage: CompiledStage, spec: AiStage, sandwich: Sandwich) -> tuple[Estimates | None, str]:
        """Where the document enters (by its class, and the estimates when adaptive); hedging's delays and shares.

        Returns the stage's estimates (None when it neither adapts nor hedges) and the document's class.
        """
        if spec.route is not None:
            prices = {
                name: c.spec.price.input_per_mtok + c.spec.price.output_per_mtok for name, c in self.clients.items()
            }
            sandwich.route = route(spec.route, spec, sandwich.text, prices)
        estimates = self.estimates.get(stage.id)
        klass = sandwich.route.complexity if sandwich.route is not None else "all"
        if estimates is not None:
            if sandwich.route is not None and spec.route is not None and spec.route.adaptive is not None:
                klass = estimates.band(sandwich.route.score, klass)
                entry, why = estimates.choose(klass)
                sandwich.route = replace(sandwich.route, entry=entry, adaptive={"band": klass, **why})
            sandwich.hedge_after = partial(estimates.hedge_after_ms, klass=klass)
        sandwich.hedges = self.hedges.get(stage.id, {})
        return estimates, klass

    async def run_stage(
        self, stage_id: str, docs: list[Document], on_record: Callable[[DecisionRecord], None] | None = None
    ) -> list[DecisionRecord]:
        """Run one stage over ``docs`` concurrently; quarantined documents are skipped.

        ``on_record`` gets each record as soon as its document ends (so it can be stored at once).
        A document starts only once it has one of the stage's slots: as many as its models serve
        at once, so that it does not start its clock and then queue at a model for the others.
        """
        stage = next(s for s in self.pipeline.stages if s.id == stage_id)
        slots = self.slots.setdefault(stage_id, asyncio.Semaphore(self._stage_slots(stage)))

        async def one(doc: Document) -> DecisionRecord:
            queued = time.perf_counter()
            async with slots:
                record = await self._run_one(stage, doc, (time.perf_counter() - queued) * 1000)
            if on_record is not None:
                on_record(record)
            return record

        return list(await asyncio.gather(*(one(d) for d in docs if d.quarantined is None)))

    def _stage_slots(self, stage: CompiledStage) -> int:
        """The most requests any model of the stage's ladder serves at once (as its client bounds them).

        Else the run's concurrency (a stage that is not an AI stage, or whose models have no client).
        """
        if not isinstance(stage.spec, AiStage):
            return self.concurrency
        clients = [
            self.clients[r.model] for r in stage.spec.ladder if isinstance(r, ModelRung) and r.model in self.clients
        ]
        # the same bound as OpenAICompatClient's semaphore: a document with a slot finds its model free
        limits = [min(self.concurrency, c.spec.max_concurrency or c.default_slots or self.concurrency) for c in clients]
        return max(limits, default=self.concurrency)


def estimates_path(pipeline: str, stage_id: str) -> Path:
    """Where a stage's routing estimates are kept across runs (``adaptive: {keep: true}``)."""
    return cache_dir() / "routing" / f"{pipeline}.{stage_id}.json"


def _adaptive(pipeline: LoadedPipeline) -> tuple[dict[str, Estimates], dict[str, dict[int, HedgeBudget]]]:
    """Estimates for each AI stage that routes adaptively or hedges, and each hedging rung's share of hedges."""
    prices = {n: (m.price.input_per_mtok, m.price.output_per_mtok) for n, m in pipeline.spec.models.items()}
    estimates, hedges = {}, {}
    for stage in pipeline.spec.stages:
        if not isinstance(stage, AiStage):
            continue
        rungs = {i: r.model for i, r in enumerate(stage.ladder) if isinstance(r, ModelRung)}
        hedged = {
            i: HedgeBudget(r.hedge.max_share)
            for i, r in enumerate(stage.ladder)
            if isinstance(r, ModelRung) and r.hedge
        }
        adaptive = stage.route.adaptive if stage.route is not None else None
        if adaptive is None and not hedged:
            continue
        found = Estimates(adaptive or AdaptiveSpec(), rungs, prices)
        if adaptive is not None and adaptive.keep:
            found.load(estimates_path(pipeline.spec.pipeline, stage.id))
        estimates[stage.id], hedges[stage.id] = found, hedged
    return estimates, hedges


#: Check workers when a pipeline does not say: one per core, up to this many (each holds spaCy, the
#: embedder and guardrails, ~350 MB).
MAX_DEFAULT_WORKERS = 8


def _check_pool(pipeline: LoadedPipeline, workers: int | None) -> CheckPool | None:
    """Check workers for the pipeline (not started yet); None when it has nothing for them or asks for none."""
    if workers is None:
        workers = pipeline.spec.run.check_workers
    if workers is None:  # the cores this process may use (a container's or taskset's share), not the machine's
        workers = min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS)
    ai = [s for s in pipeline.spec.stages if isinstance(s, AiStage)]
    specs = [check for stage in pipeline.spec.stages for check in stage.validate_]
    needs = any(s.input.redact_pii for s in ai) or any(c.check in HEAVY for c in specs)
    if workers <= 0 or not needs:
        return None
    return CheckPool(workers, pool_models(specs, [s.input for s in ai]))


def _origin(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``module.function``: the innermost frame of steadyflow, else the innermost.

    A code location, never a value: frames are read for their module and function names only
    (a check worker's error says where it was raised there).
    """
    if isinstance(exc, CheckWorkerError):
        return exc.origin
    found, innermost = "", ""
    tb = exc.__traceback__
    while tb is not None:
        name = f"{tb.tb_frame.f_globals.get('__name__', '?')}.{tb.tb_frame.f_code.co_name}"
        innermost = name
        if name.startswith("steadyflow."):
            found = name
        tb = tb.tb_next
    return found or innermost or "?"
