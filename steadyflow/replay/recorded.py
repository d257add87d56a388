"""What a recorded run saw and did, read back from its output folder for a replay.

The decision log gives each document's records (by key: ids are kept only as HMACs), with the
document's hash, where the source holds it and a fingerprint of every output; the run ledger
gives the run's source and its pipeline; the run's JSONL sink, while it still holds the run's
rows, gives the text of string outputs (for a similarity score), and ``reviewed.jsonl`` the
outputs people accepted or corrected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyflow.audit.ledger import RunLedger, read_ledger
from steadyflow.audit.log import LOG_NAME, DecisionLog
from steadyflow.core.vocabulary import QUARANTINED, ended_by
from steadyflow.runner.review import REVIEWED_NAME, sink_rows
from steadyflow.spec.models import FilesSource, TableSource


class ReplayError(Exception):
    """A replay cannot start: one line for the user (no such run, no source kept...)."""


@dataclass
class Side:
    """One document as one pipeline handled it: what replay compares, recorded or replayed."""

    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stage -> field -> ``{"value": v}`` (enums, booleans) or ``{"digest": d}``: see ``audit.records.fingerprint``."""
    outputs: dict[str, dict[str, Any]] | None = None
    """Stage -> output as written, when known (the run's sink still holds it; always for the candidate)."""
    quarantined: bool = False
    rungs: dict[str, str] = field(default_factory=dict)
    """Stage -> what ended it ('model:small', 'rules', 'default', 'quarantined')."""
    cost_usd: float = 0.0
    tokens: int = 0
    latency_ms: float = 0.0
    review: bool = False


@dataclass
class RecordedDoc:
    """A document of the recorded run, known by its key."""

    key: str
    side: Side
    document_hash: str | None
    source_ref: str | None


def side_of(records: list[dict[str, Any]]) -> Side:
    """A recorded document's side from its records (one per stage that ran, as ``DecisionLog.records`` gives them)."""
    side = Side()
    for r in records:
        side.rungs[r["stage_id"]] = ended_by(r["status"], r["rung_label"])
        side.quarantined = side.quarantined or r["status"] == QUARANTINED
        side.review = side.review or bool(r["review"])
        side.cost_usd += r["cost_usd"]
        side.tokens += r["tokens_in"] + r["tokens_out"]
        side.latency_ms += r["latency_ms"]
        if r.get("outputs") is not None:
            side.fingerprints[r["stage_id"]] = r["outputs"]
    return side


@dataclass
class RecordedRun:
    """A run of an output folder, read back: its documents, source, pipeline and what people reviewed."""

    folder: Path
    run_id: str
    info: dict[str, Any]
    log: DecisionLog
    docs: dict[str, RecordedDoc]
    snapshot: dict[str, Any] | None
    reviewed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Key -> outputs a person accepted or corrected."""

    def source(self) -> FilesSource | TableSource:
        """The source the run read (its path absolute); ReplayError when the run did not keep one."""
        kept = self.info.get("source")
        if not kept:
            raise ReplayError(
                f"run {self.run_id} kept no source (recorded before replay was possible); run it again to replay it"
            )
        data = json.loads(kept)
        return FilesSource.model_validate(data) if data.get("kind") == "files" else TableSource.model_validate(data)

    def close(self) -> None:
        """Close the decision log."""
        self.log.close()


def _run_id(ledger: RunLedger, run_id: str, folder: Path) -> str:
    if run_id == "last":
        finished = ledger.run_ids(finished=True)
        if not finished:
            raise ReplayError(f"{folder}: no finished run to replay")
        return finished[0]
    if ledger.run_info(run_id) is None:
        known = ", ".join(ledger.run_ids()[:5]) or "none"
        raise ReplayError(f"{folder}: no run {run_id} (newest: {known})")
    return run_id


def open_recorded(folder: Path, run_id: str) -> RecordedRun:
    """Read run ``run_id`` of ``folder`` (``last``: the newest finished run); raises ReplayError or StoreError."""
    if not (folder / LOG_NAME).is_file():
        raise ReplayError(f"{folder}: no {LOG_NAME} (give the --output folder of the run to replay)")
    ledger = read_ledger(folder / LOG_NAME)
    if ledger is None:
        raise ReplayError(f"{folder}: no run ledger next to {LOG_NAME}")
    try:
        run_id = _run_id(ledger, run_id, folder)
        info = ledger.run_info(run_id) or {}
        snapshot = ledger.snapshot(run_id)
        sinks = [Path(p) for p in ledger.sink_paths(run_id)]
    finally:
        ledger.close()
    log = DecisionLog(folder / LOG_NAME, readonly=True)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in log.records(run_id):
        by_key.setdefault(record["doc_id"], []).append(record)
    docs = {
        key: RecordedDoc(key, side_of(records), records[0].get("document_hash"), records[0].get("source_ref"))
        for key, records in by_key.items()
    }
    for path in sinks:  # while the sink still holds this run's rows: the text of string outputs
        for row in sink_rows(path) if path.suffix.lower() == ".jsonl" else []:
            doc = docs.get(log.key(row["id"]))
            if doc is not None and not doc.side.quarantined:
                doc.side.outputs = dict(row.get("outputs") or {})
    reviewed = {log.key(row["id"]): dict(row.get("outputs") or {}) for row in sink_rows(folder / REVIEWED_NAME)}
    return RecordedRun(folder, run_id, info, log, docs, snapshot, reviewed)
