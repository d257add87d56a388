"""The Python API: load a pipeline once, then run it as a Prefect flow or process documents one by one.

::

    import steadyflow

    pipeline = steadyflow.load("configs/support_triage.yaml", overrides=["models.small.provider=openai"])
    summary = pipeline.run(input="inbox/", output="out/")     # a Prefect flow (a subflow inside yours)
    result = await pipeline.process("My card was charged twice")  # one document, no Prefect, nothing on disk
    await pipeline.aclose()

``process`` reuses its model clients (and the local model servers it started) across calls
until :meth:`Pipeline.aclose`; ``async with steadyflow.load(...) as pipeline:`` closes them too.
Prefect is imported only by :meth:`Pipeline.run` and :meth:`Pipeline.arun`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from steadyflow.core.document import Document
from steadyflow.core.vocabulary import QUARANTINED, ended_by

if TYPE_CHECKING:
    from steadyflow.audit.records import DecisionRecord
    from steadyflow.providers.local_server import LocalEndpoints
    from steadyflow.runner.summary import RunSummary
    from steadyflow.spec.loader import LoadedPipeline
    from steadyflow.stages.engine import Engine

__all__ = ["Pipeline", "Processed", "load"]


def load(path: str | Path, overrides: list[str] | None = None, check_workers: int | None = 0) -> Pipeline:
    """Load and check the pipeline file at ``path``, as ``steadyflow validate`` and ``run`` do.

    ``overrides`` are ``dotted.key=value`` strings, like ``--set``; ``check_workers`` see
    :attr:`Pipeline.check_workers`. Raises
    :class:`steadyflow.spec.errors.SpecError` carrying every problem (``exc.problems``, one line each).
    The pipeline's plugin modules and output classes are imported: a pipeline file that names code is code.
    """
    from steadyflow.stages.checks import load_checked

    return Pipeline(load_checked(path, overrides or []), list(overrides or []), check_workers)


@dataclass
class Processed:
    """What :meth:`Pipeline.process` made of one document: its output, how it ended, and its decision records."""

    id: str
    output: dict[str, Any] | None
    """The last stage's validated (or fallback) output; None when the document was quarantined."""
    status: str
    """How the last stage that ran ended: 'validated', 'cached', 'rules', 'default' or 'quarantined'."""
    rung: str
    """The rung that ended it ('model:small', 'rules', 'default'...), or 'quarantined'."""
    review: bool
    """A person should look at it (a default flagged for review, injection signs...)."""
    reason: str | None
    """Why it was quarantined (no document text in it); None otherwise."""
    stage: str | None
    """The stage that quarantined it; None otherwise."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every stage's output, by stage id (what a sink writes)."""
    records: list[DecisionRecord] = field(default_factory=list)
    """One decision record per stage that ran: run id, model, prompt version, attempts, verdicts, cost."""

    @property
    def quarantined(self) -> bool:
        """True when no output came out."""
        return self.status == QUARANTINED

    @property
    def cost_usd(self) -> float:
        """Cost over every stage and attempt, failed ones and re-asks included."""
        return sum(r.cost_usd for r in self.records)

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens over every stage and attempt."""
        return sum(r.tokens_in + r.tokens_out for r in self.records)


class Pipeline:
    """A loaded, checked pipeline: :meth:`run` it as a Prefect flow, or :meth:`process` documents one at a time."""

    def __init__(
        self, loaded: LoadedPipeline, overrides: list[str] | None = None, check_workers: int | None = 0
    ) -> None:
        self.loaded = loaded
        """The checked pipeline as the loader returns it (spec, compiled stages, base folder)."""
        self.overrides = list(overrides or [])
        self.check_workers = check_workers
        """Processes for redaction and heavy checks (:meth:`run` and :meth:`process`).

        0 (the default from Python): in this process. None: as the pipeline's ``run.check_workers``
        says, by default one per core, as ``steadyflow run`` does. The workers are spawned: they
        import the calling script again, which must then keep its work under
        ``if __name__ == "__main__":``.
        """
        self.run_id = uuid.uuid4().hex[:12]
        """The run id of every decision record :meth:`process` returns from this object."""
        self._engine: Engine | None = None
        self._endpoints: LocalEndpoints | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._count = 0

    @property
    def name(self) -> str:
        """The ``pipeline:`` name."""
        return self.loaded.spec.pipeline

    @property
    def version(self) -> str:
        """The ``version:`` of the pipeline file."""
        return self.loaded.spec.version

    @property
    def stages(self) -> list[str]:
        """Stage ids, in order."""
        return [stage.id for stage in self.loaded.stages]

    @property
    def models(self) -> list[str]:
        """Model names the file declares."""
        return list(self.loaded.spec.models)

    @property
    def path(self) -> Path:
        """The pipeline file."""
        return self.loaded.path

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} {self.version}: {' -> '.join(self.stages)}>"

    # --- as a Prefect flow -------------------------------------------------------------------------------------

    def run(
        self,
        input: str | None = None,
        output: str | None = None,
        *,
        concurrency: int | None = None,
        chunk_size: int | None = None,
        no_cache: bool = False,
        run_id: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        actor: str | None = None,
    ) -> RunSummary:
        """Run the pipeline over its source (or ``input``) as a Prefect flow, like ``steadyflow run``; its summary.

        Called inside a running flow of yours, the pipeline's flow is a subflow of it. From async code
        (an async flow, a notebook cell), ``await`` :meth:`arun` instead: this method blocks and needs a
        thread without a running event loop. Raises what ``steadyflow run`` reports as one line:
        ``ResumeError``, ``SinkError``, ``LockedError``, ``LocalModelError``, ``OSError``, ``StoreError``,
        ``AuditError``. ``actor`` names who runs it in the audit trail (else ``$STEADYFLOW_ACTOR``, else user@host).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Pipeline.run() blocks, and this thread runs an event loop: use await pipeline.arun()")
        args = (input, output, concurrency, chunk_size, no_cache, run_id, resume, overwrite, actor)
        return asyncio.run(self.arun(*args))

    async def arun(
        self,
        input: str | None = None,
        output: str | None = None,
        concurrency: int | None = None,
        chunk_size: int | None = None,
        no_cache: bool = False,
        run_id: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        actor: str | None = None,
    ) -> RunSummary:
        """:meth:`run` for async callers: the flow runs in the running event loop (a subflow inside a flow)."""
        from steadyflow.flows.settings import prefect_defaults

        prefect_defaults()  # before Prefect is imported
        from steadyflow.flows.compiler import execute
        from steadyflow.runner.provenance import check_actor
        from steadyflow.runner.run import RunOptions, check_outputs, check_resume

        if actor is not None and (problem := check_actor(actor)):
            raise ValueError(problem)
        options = RunOptions(
            input=input,
            output=output,
            concurrency=concurrency,
            chunk_size=chunk_size,
            no_cache=no_cache,
            overrides=self.overrides,
            overwrite=overwrite,
            resume=resume,
            actor=actor,
            check_workers=self.check_workers,
        )
        if run_id is not None:
            options.run_id = run_id
        if resume:
            check_resume(self.loaded, options)
        check_outputs(self.loaded, options)
        return await execute(self.loaded, options)

    # --- one document, without Prefect -------------------------------------------------------------------------

    async def process(self, document: str | Document | dict[str, Any], *, id: str | None = None) -> Processed:
        """Run one document through every stage, without Prefect and without writing anything; never raises for it.

        ``document`` is its text, a :class:`Document`, or a dict like a JSONL line (``text`` or ``body`` is the
        text, ``id`` its id, every key a field). A bad or hostile document comes back quarantined with its
        reason. Model clients (and local model servers) are opened at the first call and reused; close them
        with :meth:`aclose`. Calls may run concurrently, in one event loop. The output cache is not used.
        """
        doc = self._document(document, id)
        engine = await self._open()
        records: list[DecisionRecord] = []
        for stage in self.stages:
            if doc.quarantined is not None:
                break
            records.extend(await engine.run_stage(stage, [doc]))
        last = records[-1] if records else None
        status = QUARANTINED if doc.quarantined else (last.status if last else QUARANTINED)
        stage_id, reason = doc.quarantined or (None, None)
        return Processed(
            id=doc.id,
            output=doc.outputs.get(self.stages[-1]) if doc.quarantined is None else None,
            status=status,
            rung=ended_by(status, last.rung_label if last else None),
            review=doc.review,
            reason=reason,
            stage=stage_id,
            outputs=dict(doc.outputs),
            records=records,
        )

    async def start(self) -> None:
        """Open the model clients (starting local model servers) now rather than at the first :meth:`process`."""
        await self._open()

    def _document(self, document: str | Document | dict[str, Any], id: str | None) -> Document:
        self._count += 1
        made = f"doc-{self._count}"
        if isinstance(document, Document):
            return document
        if isinstance(document, str):
            return Document(id or made, document, "api", id_made=id is None)
        if isinstance(document, dict):
            body = document.get("text", document.get("body"))
            given = id or document.get("id")
            text = "" if body is None else str(body)
            doc = Document(str(given) if given is not None else made, text, "api", fields=dict(document))
            doc.id_made = given is None
            if body is None:
                doc.load_error = "the document has no 'text' or 'body'"
            return doc
        raise TypeError(f"process() takes a str, a Document or a dict, not {type(document).__name__}")

    async def _open(self) -> Engine:
        """The engine of :meth:`process`: built at the first call, in the caller's event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError(
                "this Pipeline's model clients belong to another event loop: process() in one loop, "
                "or aclose() it there and load the pipeline again"
            )
        self._loop = loop
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # concurrent first calls start the local servers once
            if self._engine is None:
                self._engine = await self._create_engine()
        return self._engine

    async def _create_engine(self) -> Engine:
        from steadyflow.providers.local_server import LocalEndpoints
        from steadyflow.stages.engine import Engine

        spec = self.loaded.spec
        endpoints = LocalEndpoints(spec.models, spec.logprob_models())
        base_urls = await asyncio.to_thread(endpoints.__enter__)  # a local server takes seconds to come up
        self._endpoints = endpoints
        try:
            return Engine.create(
                self.loaded,
                self.run_id,
                spec.run.concurrency,
                base_urls,
                endpoints.model_ids,
                check_workers=self.check_workers,
            )
        except BaseException:
            self._close_endpoints()
            raise

    def _close_endpoints(self) -> None:
        if self._endpoints is not None:
            endpoints, self._endpoints = self._endpoints, None
            endpoints.__exit__(None, None, None)

    async def aclose(self) -> None:
        """Close the model clients of :meth:`process` and stop the local model servers it started."""
        engine, self._engine = self._engine, None
        try:
            if engine is not None:
                await engine.aclose()
        finally:
            self._close_endpoints()
            self._loop = None

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
