"""Check workers: input redaction and CPU-heavy checks in other processes, in batches, off the event loop.

presidio (spaCy), the ONNX embedder and guardrails' Guards are CPU work: on the event loop
they ran one document at a time and held up every model call in flight (272 tickets with the
example's checks took 18-23 s against 2.4-2.9 s without). A :class:`CheckPool` sends that work
to worker processes, one per core, while the model calls go on in the loop:

* **Batches.** Requests that arrive while the workers are busy wait and leave together, split
  between the free workers (at most :data:`MAX_BATCH` each). A worker runs spaCy once over every
  text of its batch (``nlp.pipe``, see :func:`steadyflow.validators.pii.prefetched`) and the
  embedder once per length of text (:meth:`steadyflow.validators.embeddings.Embedder.prefetched`),
  then each document's checks exactly as they run alone, reading those results. Nothing of one
  document reaches another's outcome: tests compare verdicts and redactions with one at a time.
* **Which checks.** :data:`~steadyflow.validators.runner.HEAVY` ones, in the runs their stage
  declares them in, with the output as the checks before them left it; the light ones (CEL
  rules, comparisons, plugins) run in the loop. Input redaction goes whole (``prepare``).
* **Failures.** A check that raises is a verdict, as in the loop. A worker that dies (a hostile
  document crashing a library, the OOM killer) fails every batch in flight: the pool starts new
  workers and runs each of those documents again alone, one at a time, so only a document that
  fails again alone is lost to it, quarantined with the reason (:class:`CheckWorkerError`). A
  worker whose models do not load answers each job with why, as the loop's process would fail
  each document.

Workers start with the pool (spawned, not forked: the loop's process has threads) and load the
models the pipeline needs while the first model calls are out.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

from steadyflow.spec.models import InputSpec
from steadyflow.spec.validation import CheckSpec, PiiCheck, SimilarCheck
from steadyflow.validators.base import Context, get_path, string_fields
from steadyflow.validators.inputs import PreparedInput, prepare, presidio_text
from steadyflow.validators.runner import CompiledCheck, Segment, compile_check, run_segment

#: Most documents one worker takes at once: spaCy gains nothing past ~32 short texts, and a smaller
#: batch comes back sooner.
MAX_BATCH = 64


class CheckWorkerError(Exception):
    """A check worker could not give a document's result: an exception outside any check, or the worker died.

    Carries the exception's type and where it happened, never its text (it may quote the document).
    """

    def __init__(self, error_type: str, origin: str) -> None:
        self.error_type, self.origin = error_type, origin
        super().__init__(f"{error_type} in a check worker at {origin}")


@dataclass(frozen=True)
class PrepareJob:
    """Input checks and redaction of one document (:func:`steadyflow.validators.inputs.prepare`)."""

    spec: InputSpec
    text: str
    doc_id: str
    fields: dict[str, Any]
    outputs: dict[str, Any]


@dataclass(frozen=True)
class CheckJob:
    """A run of heavy checks (``key``) on one output, from where the checks before them left it."""

    key: str
    state: Segment
    context: Context
    rung: int


Job = PrepareJob | CheckJob


@dataclass(frozen=True)
class Failed:
    """What a worker sends back for a job that raised outside any check: the type and where, no text."""

    error_type: str
    origin: str


# --- in the worker ------------------------------------------------------------------------------

_compiled: dict[str, list[CompiledCheck]] = {}
"""A worker's compiled checks by key (Guards are built once per worker, as once per stage in the loop)."""
_start_failed: Failed | None = None
"""Why this worker could not load its models (a missing spaCy model, an embedder that does not verify)."""


def warm(models: frozenset[str], parent: int) -> None:
    """Start a worker: follow ``parent`` out, then load what it will need (spaCy, the embedder, guardrails).

    A model that does not load is no crash: the worker answers every job with the reason
    (:func:`work`), so each document is quarantined saying what failed, as in the loop's process.
    """
    global _start_failed
    threading.Thread(target=_follow_parent, args=(parent,), name="steadyflow-parent-watch", daemon=True).start()
    try:
        _load(models)
    except Exception as exc:
        _start_failed = Failed(type(exc).__name__, _origin(exc))


def _load(models: frozenset[str]) -> None:
    unknown = models - {"nlp", "embed", "guards"}
    if unknown:
        raise ValueError(f"unknown check worker models: {', '.join(sorted(unknown))}")
    if "nlp" in models:
        from steadyflow.validators.pii import find

        find("warm up, Jane Doe", None)
    if "embed" in models:
        from steadyflow.validators.embeddings import embedder

        embedder().embed(["warm up"])
    if "guards" in models:
        from steadyflow.validators.guards import _validators

        _validators()


def _follow_parent(parent: int) -> None:
    """End this worker once the process that started it is gone (killed with SIGKILL, say).

    A worker waits on a queue whose writing end it holds itself, so it would never see its parent
    go, and would keep its models in memory for ever.
    """
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def work(specs: dict[str, list[CheckSpec]], jobs: list[Job]) -> list[Any]:
    """Run a batch in a worker: spaCy and the embedder over all of it first, then each job as it runs alone.

    Returns one result per job: a :class:`PreparedInput`, a :class:`Segment`, or :class:`Failed`.
    """
    if _start_failed is not None:
        return [_start_failed for _ in jobs]
    with ExitStack() as stack:
        try:
            _prefetch(stack, jobs, specs)
        except Exception:  # e.g. a text spaCy cannot take: each job then reads its own texts alone, and fails alone
            stack.close()
        return [_run(job, specs) for job in jobs]


def _run(job: Job, specs: dict[str, list[CheckSpec]]) -> Any:
    try:
        if isinstance(job, PrepareJob):
            return prepare(job.spec, job.text, job.doc_id, job.fields, job.outputs)
        if job.key not in _compiled:
            _compiled[job.key] = [compile_check(spec) for spec in specs[job.key]]
        return run_segment(_compiled[job.key], job.state, job.context, job.rung)
    except Exception as exc:
        return Failed(type(exc).__name__, _origin(exc))


def _prefetch(stack: ExitStack, jobs: list[Job], specs: dict[str, list[CheckSpec]]) -> None:
    """Run spaCy over every text presidio will read in this batch, the embedder over every text to embed."""
    nlp: list[str] = []
    embed: list[str] = []
    for job in jobs:
        if isinstance(job, PrepareJob):
            if job.spec.redact_pii:
                nlp.append(presidio_text(job.text, job.doc_id, job.fields, job.outputs))
            continue
        for check in specs.get(job.key, []):
            if isinstance(check, PiiCheck):
                nlp.extend(_strings(job.state.data, check.fields))
            elif isinstance(check, SimilarCheck):
                from steadyflow.validators.semantic import similar_texts

                embed.extend(similar_texts(check, job.state.data, job.context))
    if nlp:
        from steadyflow.validators.pii import prefetched

        stack.enter_context(prefetched(nlp))
    if embed:
        from steadyflow.validators.embeddings import embedder

        stack.enter_context(embedder().prefetched(embed))


def _strings(data: dict[str, Any], names: list[str] | None) -> Iterator[str]:
    for name in string_fields(data, names):
        value = get_path(data, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                yield item


def _origin(exc: BaseException) -> str:
    """The innermost steadyflow frame of ``exc`` as ``module.function`` (names only, never values)."""
    found, tb = "?", exc.__traceback__
    while tb is not None:
        name = f"{tb.tb_frame.f_globals.get('__name__', '?')}.{tb.tb_frame.f_code.co_name}"
        if name.startswith("steadyflow.") or found == "?":
            found = name
        tb = tb.tb_next
    return found


# --- in the event loop's process -----------------------------------------------------------------


@dataclass(eq=False)
class _Waiting:
    job: Job
    future: asyncio.Future[Any]
    specs: list[CheckSpec] = field(default_factory=list)
    suspect: bool = False
    """Its batch failed (a worker died, a job could not be sent): it runs again alone, with nothing beside it."""


class CheckPool:
    """Worker processes for input redaction and heavy checks; batches what arrives while they are busy.

    ``models`` are what the workers load at start (``nlp``, ``embed``, ``guards``). Use it from one
    event loop; :meth:`aclose` stops the workers.

    When a batch fails as a whole (a worker died, which takes every batch in flight with it, or a
    job could not be sent), each of its documents becomes a *suspect*: suspects run one at a time
    with nothing else in flight, so the one that fails again alone is the cause, and only it ends
    with :class:`CheckWorkerError`; the others get their results.
    """

    def __init__(self, workers: int, models: frozenset[str] = frozenset()) -> None:
        self.workers, self.models = max(1, workers), models
        self.batches = 0
        """Batches sent (for tests and benchmarks: how much batching happened)."""
        self.restarts = 0
        """Times the workers were replaced after one died."""
        self._executor: ProcessPoolExecutor | None = None
        self._waiting: list[_Waiting] = []
        self._busy = 0
        self._alone = False
        """A suspect is in flight: nothing is sent beside it."""
        self._scheduled = False
        self._closed = False

    def start(self) -> None:
        """Start the workers now, so that they load their models while the first model calls are out."""
        executor = self._pool()
        for _ in range(self.workers):  # each submit starts a worker while none is idle
            executor.submit(os.getpid)

    def _pool(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the check pool is closed")
        if self._executor is None:
            context = multiprocessing.get_context("spawn")  # the loop's process has threads: no fork
            self._executor = ProcessPoolExecutor(
                self.workers, context, initializer=warm, initargs=(self.models, os.getpid())
            )
        return self._executor

    async def prepare(
        self, spec: InputSpec, text: str, doc_id: str, fields: dict[str, Any], outputs: dict[str, Any]
    ) -> PreparedInput:
        """:func:`steadyflow.validators.inputs.prepare` in a worker."""
        result = await self._submit(PrepareJob(spec, text, doc_id, fields, outputs), [])
        if not isinstance(result, PreparedInput):
            raise TypeError(type(result).__name__)
        return result

    async def check(self, key: str, specs: list[CheckSpec], state: Segment, context: Context, rung: int) -> Segment:
        """Run the checks ``specs`` (``key``: their identity) on ``state`` in a worker; where they got."""
        result = await self._submit(CheckJob(key, state, context, rung), specs)
        if not isinstance(result, Segment):
            raise TypeError(type(result).__name__)
        return result

    async def _submit(self, job: Job, specs: list[CheckSpec]) -> Any:
        if self._closed:
            raise CheckWorkerError("CheckPoolClosed", "steadyflow.validators.pool")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(job, loop.create_future(), specs)
        self._waiting.append(waiting)
        self._schedule(loop)
        result = await waiting.future
        if isinstance(result, Failed):
            raise CheckWorkerError(result.error_type, result.origin)
        return result

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:  # whatever else arrives in this turn of the loop leaves with it
            self._scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._waiting = [w for w in self._waiting if not w.future.done()]  # documents cancelled meanwhile
        while self._waiting and not self._closed and not self._alone and self._busy < self.workers:
            suspect = next((w for w in self._waiting if w.suspect), None)
            if suspect is not None:
                if self._busy:  # a suspect goes alone: wait until nothing else is in flight
                    return
                self._waiting.remove(suspect)
                self._alone = True
                self._send([suspect])
                continue
            size = min(MAX_BATCH, math.ceil(len(self._waiting) / (self.workers - self._busy)))
            batch, self._waiting = self._waiting[:size], self._waiting[size:]
            self._send(batch)

    def _send(self, batch: list[_Waiting]) -> None:
        specs = {w.job.key: w.specs for w in batch if isinstance(w.job, CheckJob)}
        jobs = [w.job for w in batch]
        loop = asyncio.get_running_loop()
        self._busy += 1
        self.batches += 1
        try:
            executor = self._pool()
            done = executor.submit(work, specs, jobs)
        except BrokenProcessPool:  # the workers died while idle: nothing was tried, the batch waits for new ones
            self._busy -= 1
            self._alone = False
            self._replace(self._executor)
            self._waiting[:0] = batch
            self._schedule(loop)
            return
        except Exception as exc:  # no worker can be started (out of memory, out of processes) or the pool closed
            self._busy -= 1
            self._alone = False
            for waiting in batch:
                _settle(waiting.future, Failed(type(exc).__name__, "steadyflow.validators.pool"))
            return

        def returned(future: Future[list[Any]]) -> None:
            with suppress(RuntimeError):  # the loop has closed: nobody waits for these documents any more
                loop.call_soon_threadsafe(self._returned, batch, future, executor)

        done.add_done_callback(returned)

    def _returned(self, batch: list[_Waiting], done: Future[list[Any]], executor: ProcessPoolExecutor) -> None:
        self._busy -= 1
        alone = self._alone and len(batch) == 1 and batch[0].suspect
        if alone:
            self._alone = False
        try:
            error: BaseException | None = CancelledError() if done.cancelled() else done.exception()
            if error is None:
                for waiting, result in zip(batch, done.result(), strict=True):
                    _settle(waiting.future, result)
                return
            if isinstance(error, BrokenProcessPool):
                self._replace(executor)
            if alone or self._closed or isinstance(error, CancelledError):
                # failed again with nothing beside it: this document is the cause (or the pool is closing)
                died = "CheckWorkerDied" if isinstance(error, BrokenProcessPool) else type(error).__name__
                for waiting in batch:
                    _settle(waiting.future, Failed(died, "a check worker process"))
                return
            for waiting in batch:
                waiting.suspect = True
            self._waiting[:0] = batch
        finally:
            self._flush()

    def _replace(self, executor: ProcessPoolExecutor | None) -> None:
        """New workers after one died (a broken pool has none left); once per death, however many batches it took."""
        if executor is not None and executor is self._executor:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self.restarts += 1

    async def aclose(self) -> None:
        """Stop the workers; documents still waiting or in flight get :class:`CheckWorkerError`."""
        self._closed = True
        for waiting in self._waiting:
            _settle(waiting.future, Failed("CheckPoolClosed", "steadyflow.validators.pool"))
        self._waiting = []
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    with suppress(asyncio.InvalidStateError):  # its document was cancelled meanwhile
        future.set_result(result)


def pool_models(specs: list[CheckSpec], inputs: list[InputSpec]) -> frozenset[str]:
    """What check workers load for these checks and input specs: ``nlp``, ``embed``, ``guards``."""
    names = {spec.check for spec in specs}
    models = set()
    if names & {"pii"} or any(spec.redact_pii for spec in inputs):
        models.add("nlp")
    if "similar" in names:
        models.add("embed")
    if names & {"banned", "competitors", "secrets", "format"}:
        models.add("guards")
    return frozenset(models)
