"""One run, computed once: its folder, stores, settings, resume state, budget, cache and sinks.

:meth:`Run.open` takes the output folder's lock, opens the decision log and the run
ledger (moving a pre-split folder's run tables into the ledger), works out what a
resume skips, opens the sinks and registers the run; :meth:`Run.close` releases all
of it, however the run ended. :mod:`steadyflow.runner.batch` drives the documents through.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from steadyflow.audit.chain import AuditError
from steadyflow.audit.ledger import Mark, RunLedger, open_ledger, read_ledger, supersede_unfinished
from steadyflow.audit.log import LOG_NAME, DecisionLog
from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.sqlite import StoreError
from steadyflow.core.document import Document
from steadyflow.io.lock import LockedError, folder_lock, probe
from steadyflow.io.outputs import OpenSinks, check_file_sinks, check_run_files, open_sinks, output_folder, sink_spec
from steadyflow.io.sinks import SinkError, SqlRows
from steadyflow.io.sources import source_for
from steadyflow.providers.local_model import cache_dir
from steadyflow.runner.provenance import RunTrail, open_trail
from steadyflow.runner.summary import RunSummary
from steadyflow.runner.telemetry import open_tracer
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import AiStage, FilesSource, TableSource
from steadyflow.spec.resilience import CacheRung
from steadyflow.spec.snapshot import prompts, snapshot, snapshot_hash
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache
from steadyflow.stages.engine import Engine

if TYPE_CHECKING:
    from steadyflow.runner.spans import RunTracer


class Progress(Protocol):
    """What ``steadyflow run`` shows while a batch runs (see cli/progress.py)."""

    def start(self, total: int | None, skipped: int) -> None:
        """The batch starts: ``total`` documents (None if unknown), ``skipped`` done by an earlier attempt."""

    def update(self, summary: RunSummary, finished: int) -> None:
        """A document finished.

        ``finished`` documents of this attempt went through every stage (or were quarantined).
        """


class ResumeError(Exception):
    """A run cannot be resumed (unknown id, or the pipeline changed since)."""


OPERATIONAL = (OSError, StoreError, SinkError, LockedError, ResumeError, AuditError)
"""Failures of the machine or of the folder, not of a document: the run stops with one line, resumable."""


@dataclass
class RunOptions:
    """Per-run settings from the CLI; ``None`` means "as the pipeline file says"."""

    input: str | None = None
    output: str | None = None
    concurrency: int | None = None
    chunk_size: int | None = None
    no_cache: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    resume: bool = False
    """Continue ``run_id``: skip its completed documents, cut file sinks back to its last marks."""
    overwrite: bool = False
    """Replace sink files that belong to an unfinished run or to no run recorded in the folder."""
    overrides: list[str] = field(default_factory=list)
    """The ``--set`` values the pipeline was loaded with (Dask workers load it again)."""
    shadow: Path | None = None
    """A candidate pipeline file to run beside production (see :mod:`steadyflow.runner.shadow`)."""
    shadow_share: float = 0.1
    """The share of documents the shadow also runs."""
    actor: str | None = None
    """Who runs the pipeline, for the audit trail (else ``$STEADYFLOW_ACTOR``, else ``user@host``)."""
    check_workers: int | None = None
    """Processes for redaction and heavy checks (None: as the pipeline's ``run.check_workers`` says)."""
    progress: Progress | None = None


def spec_hash(pipeline: LoadedPipeline) -> str:
    """A fingerprint of the pipeline as loaded (overrides included): resume refuses a changed pipeline.

    Values left at their defaults are not part of it, so an upgrade of steadyflow that adds a setting
    (with a default) does not make the runs it interrupted impossible to resume.
    """
    return hashlib.sha256(pipeline.spec.model_dump_json(exclude_defaults=True).encode()).hexdigest()[:16]


def source_of(pipeline: LoadedPipeline, input: str | None) -> tuple[FilesSource | TableSource, Path]:
    """The source a run reads (``--input``, else the pipeline's) and the folder its path is relative to."""
    if input:
        return source_for(input), Path.cwd()
    if pipeline.spec.source is not None:
        return pipeline.spec.source, pipeline.base_dir
    raise ValueError("the pipeline has no source: give --input PATH")


def source_json(spec: FilesSource | TableSource, base: Path) -> str:
    """The source as a run keeps it: its settings, its path made absolute (replay reads it again from there)."""
    data = spec.model_dump(mode="json")
    data["path"] = os.path.abspath(base / spec.path)
    return json.dumps(data, sort_keys=True)


def folder_of(pipeline: LoadedPipeline, options: RunOptions) -> Path:
    """The folder of outputs, quarantine, decision log and run ledger.

    See :func:`steadyflow.io.outputs.output_folder`.
    """
    return output_folder(pipeline.spec, pipeline.base_dir, options.output)


def _resolve_resume(ledger: RunLedger | None, pipeline: LoadedPipeline, options: RunOptions) -> None:
    """Check ``options.run_id`` can be resumed with this pipeline (``last``: the newest unfinished run), or raise."""
    db = folder_of(pipeline, options) / LOG_NAME
    if ledger is None:
        raise ResumeError(f"--resume {options.run_id}: no decisions store at {db} (give the --output of that run)")
    if options.run_id == "last":
        unfinished = ledger.unfinished_runs(pipeline.spec.pipeline)
        if not unfinished:
            raise ResumeError(f"--resume last: {db} has no unfinished run of {pipeline.spec.pipeline}")
        options.run_id = unfinished[0]
    info = ledger.run_info(options.run_id)
    if info is None:
        known = ", ".join(ledger.run_ids()[:5]) or "none"
        raise ResumeError(f"--resume {options.run_id}: {db} has no such run (newest: {known})")
    kept = info.get("snapshot_hash")  # prompts and rules files too (spec_hash sees only their names)
    if (
        info["pipeline"] != pipeline.spec.pipeline
        or (info["spec_hash"] or "") != spec_hash(pipeline)
        or (kept and kept != snapshot_hash(snapshot(pipeline)))
    ):
        raise ResumeError(
            f"--resume {options.run_id}: the pipeline changed since that run started; "
            "resume with the same file and --set values, or start a new run"
        )


def check_resume(pipeline: LoadedPipeline, options: RunOptions) -> None:
    """Raise :class:`ResumeError` unless ``options.run_id`` can be resumed with this pipeline; writes nothing.

    ``--resume last`` means the newest run of this pipeline in the folder that never finished (``run_id`` is set to it).
    """
    folder = folder_of(pipeline, options)
    ledger = read_ledger(folder / LOG_NAME) if (folder / LOG_NAME).is_file() else None
    try:
        _resolve_resume(ledger, pipeline, options)
    finally:
        if ledger is not None:
            ledger.close()


def check_outputs(pipeline: LoadedPipeline, options: RunOptions) -> None:
    """Raise ``SinkError`` or ``LockedError`` now if the run would be refused its output folder or sinks."""
    folder = folder_of(pipeline, options)
    probe(folder)
    check_file_sinks(
        sink_spec(pipeline.spec), folder, pipeline.base_dir, options.run_id, options.resume, options.overwrite
    )


def open_budget(pipeline: LoadedPipeline, log: DecisionLog, ledger: RunLedger, run_id: str) -> Budget:
    """The run's budget, charged with what earlier runs (and earlier attempts of this run) spent.

    Both what their records cost and what their interrupted attempts cost count.
    """
    spec = pipeline.spec.budget
    before_usd, before_tokens = 0.0, 0
    if spec is not None and spec.pipeline is not None:
        since = time.time() - spec.pipeline_window_h * 3600
        recorded, interrupted = (
            log.pipeline_spend(pipeline.spec.pipeline, since),
            ledger.interrupted_since(pipeline.spec.pipeline, since),
        )
        before_usd, before_tokens = recorded[0] + interrupted[0], recorded[1] + interrupted[1]
    budget = Budget(spec, before_usd, before_tokens)
    recorded, interrupted = log.run_spend(run_id), ledger.interrupted(run_id)
    budget.usd, budget.tokens = recorded[0] + interrupted[0], recorded[1] + interrupted[1]
    budget.pipeline_usd_before -= budget.usd  # already counted in the pipeline's spend
    budget.pipeline_tokens_before -= budget.tokens
    return budget


def open_cache(pipeline: LoadedPipeline, options: RunOptions) -> OutputCache | None:
    """The output cache, when a ladder has a cache rung and --no-cache is not given."""
    uses_cache = any(isinstance(r, CacheRung) for s in pipeline.spec.stages if isinstance(s, AiStage) for r in s.ladder)
    if options.no_cache or not uses_cache:
        return None
    path = pipeline.spec.run.cache_path
    return OutputCache(pipeline.base_dir / path if path else cache_dir() / "outputs.sqlite")


@dataclass
class Run:
    """One run of a pipeline, computed once by :meth:`open`; it owns its lock, stores, sinks and cache.

    ``done`` holds the keys of documents an earlier attempt completed (skipped on resume);
    use it as a context manager, or call :meth:`close`, which releases everything.
    """

    pipeline: LoadedPipeline
    options: RunOptions
    folder: Path
    concurrency: int
    chunk_size: int
    log: DecisionLog
    ledger: RunLedger
    sinks: OpenSinks
    budget: Budget
    cache: OutputCache | None
    summary: RunSummary
    done: set[str]
    trail: RunTrail | None
    """The run's records in the audit store (None when the pipeline says ``audit: {enabled: false}``)."""
    tracer: RunTracer | None
    """The run's OpenTelemetry spans (None unless a collector is named: see :mod:`steadyflow.runner.telemetry`)."""
    _resources: ExitStack = field(repr=False)

    @property
    def run_id(self) -> str:
        """The run's id (``--resume last`` resolved)."""
        return self.options.run_id

    @classmethod
    def open(
        cls,
        pipeline: LoadedPipeline,
        options: RunOptions,
        flow_run_id: str | None = None,
        deployment: str | None = None,
    ) -> Run:
        """Take the folder's lock and open everything the run needs; raise the one-line :data:`OPERATIONAL` errors.

        A resume is checked again here, under the lock; a run refused at the door is not registered. ``flow_run_id``
        and ``deployment`` (a Prefect deployment's name) say what started the run, for the audit trail.
        """
        folder = folder_of(pipeline, options)
        spec = pipeline.spec
        with ExitStack() as stack:
            stack.enter_context(folder_lock(folder).acquire(options.run_id))
            check_run_files(folder)  # once no other run can change the folder (the CLI checked before start-up too)
            if options.resume and not (folder / LOG_NAME).is_file():
                _resolve_resume(None, pipeline, options)
            log = DecisionLog(folder / LOG_NAME)
            stack.callback(log.close)
            ledger = open_ledger(folder, log)
            stack.callback(ledger.close)
            done: set[str] = set()
            marks: dict[str, Mark] | None = None
            if options.resume:
                _resolve_resume(ledger, pipeline, options)
                done, marks = ledger.completed_keys(options.run_id), ledger.marks(options.run_id)
            # an unreachable audit store refuses the run at the door (run_id is resolved: --resume last)
            trail = open_trail(pipeline, options.run_id, options.actor, flow_run_id, deployment)
            if trail is not None:
                stack.callback(trail.close)
            sinks = open_sinks(
                sink_spec(spec), folder, pipeline.base_dir, options.run_id, ledger, marks, options.overwrite
            )
            stack.callback(sinks.close)
            summary = RunSummary(
                run_id=options.run_id, pipeline=spec.pipeline, flow_run_id=flow_run_id, decisions_path=str(log.path)
            )
            summary.output_path, summary.quarantine_path = sinks.output_path, sinks.quarantine_path
            with ledger.writing(), log.writing():
                # registered only once its sinks are claimed: a run refused at the door is not left "unfinished"
                ledger.start_run(options.run_id, spec.pipeline, spec.version, flow_run_id, spec_hash(pipeline))
                source = _keep_version(ledger, pipeline, options)
                if options.resume:
                    done |= _complete_written(log, ledger, sinks, options.run_id, done)
                    summary.interrupted_usd = supersede_unfinished(log, ledger, options.run_id)[0]
            if trail is not None:
                trail.start(json.loads(source) if source else None, options.resume)
            budget = open_budget(pipeline, log, ledger, options.run_id)
            tracer = open_tracer(pipeline, options.run_id, options.resume, log.key)
            if tracer is None and spec.telemetry.otlp_endpoint:  # on call, say why traces stopped
                summary.notes.append(
                    "telemetry: off (OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none in the environment)"
                )
            if tracer is not None:  # a run that raises ends its span as failed; one that finished already ended it
                stack.callback(tracer.finish, None)
            cache = open_cache(pipeline, options)
            if cache is not None:
                stack.callback(cache.close)
            run = cls(
                pipeline,
                options,
                folder,
                options.concurrency or spec.run.concurrency,
                options.chunk_size or spec.run.chunk_size,
                log,
                ledger,
                sinks,
                budget,
                cache,
                summary,
                done,
                trail,
                tracer,
                stack.pop_all(),
            )
        return run

    def engine(self, base_urls: dict[str, str] | None = None, model_ids: dict[str, str] | None = None) -> Engine:
        """An engine for this run's stages in this process (the caller closes it with ``await engine.aclose()``)."""
        return Engine.create(
            self.pipeline,
            self.run_id,
            self.concurrency,
            base_urls or {},
            model_ids or {},
            self.budget,
            self.cache,
            self.log.digest,
            self.options.check_workers,
        )

    def record(self, records: list[DecisionRecord]) -> None:
        """Store decision records at once (a crash keeps them and their cost); a write failure is a StoreError."""
        with self.log.writing():
            self.log.add(records)
        if self.trail is not None:
            self.trail.add(records)

    def complete(self, docs: list[Document], marks: dict[str, Mark]) -> None:
        """Mark documents completed with the sink marks that cover them, in one ledger transaction.

        Their audit records are written first: a completed document always has them.
        """
        if self.trail is not None:
            self.trail.flush()
        with self.ledger.writing():
            self.ledger.complete(self.run_id, [(self.log.key(d.id), d.quarantined is not None) for d in docs], marks)

    def finish(self) -> None:
        """Store the summary: the run is finished (a run that never gets here can be resumed).

        The audit trail gets the run's end first, and the chain's head goes into the summary.
        """
        summary = self.summary
        totals = {
            "documents": summary.documents,
            "outputs": summary.outputs,
            "quarantined": summary.quarantined,
            "review": summary.review,
            "cost_usd": round(summary.cost_usd, 6),
        }
        if self.trail is not None:
            self.trail.finish(dict(totals))
            seq, head = self.trail.head or (0, "")
            summary.audit = {"store": self.trail.store.shown, "head_seq": seq, "head_hash": head}
        if self.tracer is not None:  # spans are sent before the summary is stored, so it can say if they were not
            note = self.tracer.finish(totals)
            if note:
                summary.notes.append(note)
        with self.ledger.writing():
            self.ledger.finish_run(self.run_id, self.summary.as_json())

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Any SQLite write failure in the block is a one-line StoreError naming the folder's stores."""
        with self.ledger.writing(), self.log.writing():
            yield

    def close(self) -> None:
        """Release everything the run holds: sinks, cache, stores, the folder's lock (in reverse order of opening)."""
        self._resources.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _keep_version(ledger: RunLedger, pipeline: LoadedPipeline, options: RunOptions) -> str | None:
    """Keep the pipeline as this run runs it, its prompts and its source (what ``replay`` and ``diff`` read).

    Returns the source as kept (JSON), or None when the run has no source.
    """
    version = snapshot(pipeline)
    try:
        source: str | None = source_json(*source_of(pipeline, options.input))
    except ValueError:
        source = None  # no source: the run fails on it before reading any document
    ledger.keep_version(options.run_id, version, snapshot_hash(version), prompts(version), source)
    return source


def _complete_written(log: DecisionLog, ledger: RunLedger, sinks: OpenSinks, run_id: str, done: set[str]) -> set[str]:
    """On resume: documents in a SQL sink's table but not yet marked are completed.

    A second insert would be ignored.
    """
    added: set[str] = set()
    for rows, quarantined in ((sinks.outputs, False), (sinks.quarantine, True)):
        if isinstance(rows, SqlRows):
            written = [(log.key(doc_id), quarantined) for doc_id in rows.written_ids()]
            fresh = [(key, q) for key, q in written if key not in done]
            ledger.complete(run_id, fresh, {})
            added |= {key for key, _ in fresh}
    return added
