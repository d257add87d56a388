"""Shadow runs: a candidate pipeline beside production, on a share of the documents, touching nothing of it.

``steadyflow run FILE --shadow candidate.yaml --shadow-share 0.1`` runs production as always; after
each chunk is written and marked completed, the chosen documents (a fair, repeatable draw by their
keys) go through the candidate too. Only production's outputs reach the sink. The candidate's
records go to ``shadow/decisions.sqlite`` in the output folder (keyed with the production log's
secret, so ``replay RUN_ID --shadow`` can match them with the run's own) and its outputs to
``shadow/<run id>.jsonl``. The candidate has its own budget and no output cache. Whatever goes
wrong in the shadow (a broken model, a full disk) is counted and noted in the run's summary, never
raised: a shadow must not stop or change production.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from steadyflow.audit.log import LOG_NAME, DecisionLog
from steadyflow.audit.sqlite import StoreError
from steadyflow.core.document import Document
from steadyflow.io.sinks import output_row
from steadyflow.providers.local_server import LocalEndpoints
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.stages.budget import Budget
from steadyflow.stages.engine import Engine

SHADOW_DIR = "shadow"


def shadow_log_path(folder: Path) -> Path:
    """Where a folder's shadow records are."""
    return folder / SHADOW_DIR / LOG_NAME


def shadow_rows_path(folder: Path, run_id: str) -> Path:
    """Where a run's shadow outputs are (JSONL rows like a sink's)."""
    return folder / SHADOW_DIR / f"{run_id}.jsonl"


def chosen(key: str, share: float) -> bool:
    """Whether a document (by its key, an HMAC: uniformly spread) is in the shadow's share."""
    return int(key[:8], 16) < share * 0x1_0000_0000


@dataclass
class Shadow:
    """A candidate pipeline run beside production; see the module's docstring."""

    pipeline: LoadedPipeline
    share: float
    folder: Path
    run_id: str
    log: DecisionLog
    documents: int = 0
    failed: int = 0
    problem: str | None = None
    """What went wrong in the shadow first (an error's type, never its message: it may quote a document)."""
    _engine: Engine | None = field(default=None, repr=False)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @classmethod
    def open(cls, pipeline: LoadedPipeline, share: float, folder: Path, run_id: str, production: DecisionLog) -> Shadow:
        """Open the shadow store with the production log's key; StoreError if it was keyed for another folder."""
        log = DecisionLog(shadow_log_path(folder), salt=production.salt)
        if log.salt != production.salt:
            log.close()
            raise StoreError(
                f"{shadow_log_path(folder)}: belongs to another decisions store; move the shadow folder away"
            )
        return cls(pipeline, share, folder, run_id, log)

    def take(self, production: DecisionLog, docs: list[Document]) -> list[Document]:
        """Copies of the chunk's chosen documents, as read (before production's stages touch them)."""
        return [
            replace(d, outputs={}, rungs={}, review=False, quarantined=None)
            for d in docs
            if chosen(production.key(d.id), self.share)
        ]

    async def start(self, concurrency: int) -> None:
        """Start the candidate's local models (if any) and its engine; a failure is noted, production goes on."""
        try:
            local = LocalEndpoints(self.pipeline.spec.models, self.pipeline.spec.logprob_models())
            base_urls = self._stack.enter_context(local)
            self._engine = Engine.create(
                self.pipeline,
                self.run_id,
                concurrency,
                base_urls,
                local.model_ids,
                Budget(self.pipeline.spec.budget),
                None,
                self.log.digest,
                check_workers=0,  # a share of the documents, beside production's workers: checked in this process
            )
        except Exception as exc:  # the shadow must not stop production; counted and noted
            self._engine, self.problem = None, f"the candidate could not start ({type(exc).__name__})"

    async def run(self, docs: list[Document]) -> None:
        """The candidate over ``docs``: records to the shadow store, outputs to the shadow rows; never raises."""
        if not docs:
            return
        self.documents += len(docs)
        if self._engine is None:
            self.failed += len(docs)
            return
        try:
            for stage in self.pipeline.stages:
                live = [d for d in docs if d.quarantined is None]
                records = await self._engine.run_stage(stage.id, live)
                self.log.add(records)
            self._append([d for d in docs if d.quarantined is None])
        except Exception as exc:  # a full disk, a closed store: counted, never production's problem
            self.failed += len(docs)
            self.problem = self.problem or f"{type(exc).__name__} in the shadow"

    def _append(self, docs: list[Document]) -> None:
        path = shadow_rows_path(self.folder, self.run_id)
        data = "".join(json.dumps(output_row(d), ensure_ascii=False) + "\n" for d in docs).encode("utf-8", "replace")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "ab") as handle:  # closes fd however the write ends
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def note(self) -> str:
        """The run summary's line about the shadow."""
        where = self.log.path.parent
        failed = f", {self.failed} failed in the shadow, {self.problem} (production unaffected)" if self.failed else ""
        return (
            f"shadow: {self.documents} documents ({self.share:.0%}) also ran through {self.pipeline.path}{failed}; "
            f"compare with: steadyflow replay {self.run_id} --shadow --output {self.folder} (records in {where})"
        )

    async def aclose(self) -> None:
        """Close the candidate's clients, its local models and the shadow store."""
        try:
            if self._engine is not None:
                await self._engine.aclose()
        finally:
            self._stack.close()
            self.log.close()
