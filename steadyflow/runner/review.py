"""Review: a person accepts or corrects the outputs a run flagged, and the corrections flow back.

A run flags a document for review when its default answered, a check with ``on_fail: review``
failed (a low confidence), or the document showed prompt-injection signs. Flagged rows are read
from the run's JSONL sink; a decision appends the document's row, corrected or as it was, to
``reviewed.jsonl`` in the output folder (the sink's own file is left alone: a resumed run cuts
it back to its last mark), then the decision log records who decided, when, and which fields
changed (names only, never values). ``export`` turns reviewed documents into a labelled
dataset for ``steadyflow eval``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steadyflow.audit.chain import AuditError
from steadyflow.audit.entries import review_entry
from steadyflow.audit.log import LOG_NAME, DecisionLog
from steadyflow.audit.records import output_hash, validation_summary
from steadyflow.audit.trail import AuditStore
from steadyflow.io.limits import LIMITS, MIB, printable
from steadyflow.io.outputs import output_folder, sink_spec
from steadyflow.io.sources import read_file
from steadyflow.runner.provenance import open_store
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import FileSink

REVIEWED_NAME = "reviewed.jsonl"


class ReviewError(Exception):
    """Review cannot go on: one line for the user (no sink file, a correction that breaks the schema...)."""


@dataclass
class Flagged:
    """A document's sink row that a person should look at."""

    id: str
    source: str
    rungs: dict[str, str]
    outputs: dict[str, dict[str, Any]]
    row: dict[str, Any] = field(repr=False, default_factory=dict)


def _sink_file(pipeline: LoadedPipeline, folder: Path) -> Path:
    spec = sink_spec(pipeline.spec)
    if not isinstance(spec, FileSink) or spec.kind != "jsonl":
        raise ReviewError(f"review reads JSONL sinks; this pipeline's sink is {spec.kind}")
    return pipeline.base_dir / spec.path if spec.outside_output else folder / Path(spec.path).name


def folder_for(pipeline: LoadedPipeline, output: str | None) -> Path:
    """The output folder a review works on (``--output``, else the pipeline's)."""
    return output_folder(pipeline.spec, pipeline.base_dir, output)


def sink_rows(path: Path) -> list[dict[str, Any]]:
    """Every JSON object line of ``path``; over-long or broken lines are skipped (a crash's half line).

    A row that parses but is not a sink row (an id, a source, outputs by stage) is refused with its line:
    showing or exporting it would fail half-way.
    """
    rows = []
    try:
        with path.open("rb") as handle:
            number = 0
            while line := handle.readline(LIMITS.record_bytes + 1):
                number += 1
                if len(line) > LIMITS.record_bytes:
                    handle.readline()  # the rest of an over-long line is not held
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    if not _is_sink_row(row):
                        raise ReviewError(f"{path}:{number}: not a row of a JSONL sink (id, source, outputs by stage)")
                    rows.append(row)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ReviewError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    return rows


def _is_sink_row(row: dict[str, Any]) -> bool:
    outputs, rungs, reviewed = row.get("outputs", {}), row.get("rungs") or {}, row.get("reviewed") or {}
    return (
        isinstance(row.get("source", ""), str)
        and isinstance(outputs, dict)
        and all(isinstance(output, dict) for output in outputs.values())
        and isinstance(rungs, dict)
        and isinstance(reviewed, dict)
    )


def _open_log(folder: Path) -> DecisionLog:
    if not (folder / LOG_NAME).is_file():
        raise ReviewError(f"{folder}: no {LOG_NAME} (give the --output of a run)")
    return DecisionLog(folder / LOG_NAME)


def flagged(pipeline: LoadedPipeline, folder: Path) -> list[Flagged]:
    """Documents flagged for review and not yet decided, in sink order (the latest row of each id)."""
    sink = _sink_file(pipeline, folder)
    if not sink.is_file():
        raise ReviewError(f"{sink}: no such file (run the pipeline first, or give its --output)")
    log = _open_log(folder)
    try:
        decided = log.reviewed()
        latest = {row["id"]: row for row in sink_rows(sink)}
        pending = [row for doc_id, row in latest.items() if row.get("review") and log.key(doc_id) not in decided]
    finally:
        log.close()
    return [
        Flagged(
            row["id"], str(row.get("source", "")), dict(row.get("rungs") or {}), dict(row.get("outputs") or {}), row
        )
        for row in pending
    ]


def check_correction(pipeline: LoadedPipeline, outputs: dict[str, dict[str, Any]]) -> None:
    """Raise ReviewError unless every stage's corrected output fits that stage's output schema."""
    models = {stage.id: stage.output_model for stage in pipeline.stages}
    for stage_id, output in outputs.items():
        model = models.get(stage_id)
        if model is None:
            raise ReviewError(f"no stage '{stage_id}'")
        try:  # as JSON, NaN refused: no JSON reader (export, eval) would take the row back
            encoded = json.dumps(output, allow_nan=False)
        except ValueError:
            raise ReviewError(f"{stage_id}: the correction holds NaN or Infinity, which are not JSON values") from None
        try:  # strict: the value is stored as given, so "2" must not pass for a number nor "NaN" for NaN
            model.model_validate_json(encoded, strict=True)
        except ValidationError as exc:
            raise ReviewError(
                f"{stage_id}: the correction does not fit the schema: {validation_summary(exc)}"
            ) from None


def decide(
    pipeline: LoadedPipeline, folder: Path, item: Flagged, reviewer: str, corrected: dict[str, dict[str, Any]] | None
) -> str:
    """Accept ``item`` as it is (``corrected`` None) or with corrected outputs; 'accepted' or 'corrected'.

    The reviewed row is written durably before the decision is recorded: a crash in between leaves the
    document pending, and deciding it again appends a row that supersedes the first. Decisions on one
    folder are taken one at a time (a lock on ``reviewed.jsonl``), and a document another reviewer
    decided meanwhile is refused with who and when.
    """
    if not reviewer.strip():
        raise ReviewError("a review needs the reviewer's name (--reviewer)")
    if printable(reviewer) != reviewer:
        raise ReviewError(f"the reviewer's name '{printable(reviewer)}' has control characters (one line, please)")
    outputs = corrected if corrected is not None else item.outputs
    check_correction(pipeline, outputs)
    changed = sorted(
        f"{stage}.{name}"
        for stage, output in outputs.items()
        for name in output
        if output.get(name) != item.outputs.get(stage, {}).get(name)
    )
    action = "corrected" if changed else "accepted"
    trail = _open_trail(pipeline)  # before anything is written: an unreachable store refuses the decision
    row = {**item.row, "review": False, "outputs": outputs, "reviewed": {"by": reviewer, "action": action}}
    line = json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"  # check_correction refused NaN
    path = folder / REVIEWED_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise ReviewError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})") from None
    try:
        # one decision at a time per folder: a second reviewer (terminal or UI) deciding the same document
        # meanwhile is told so, instead of both rows and both records landing
        fcntl.flock(fd, fcntl.LOCK_EX)
        log = _open_log(folder)
        try:
            earlier = log.reviewed().get(log.key(item.id))
            if earlier is not None:
                by, at, done = earlier
                when = time.strftime("%H:%M:%S", time.localtime(at))
                raise ReviewError(f"{printable(item.id)}: already {done} by {printable(by)} at {when}")
            os.write(fd, line.encode("utf-8", "surrogatepass"))
            os.fsync(fd)
            if trail is not None:  # before the log: a failure leaves the document pending, never unrecorded
                _audit_review(trail, pipeline, item, reviewer, action, changed, outputs)
            log.add_review(item.id, reviewer, action, changed, json.dumps(outputs, sort_keys=True))
        finally:
            log.close()
            if trail is not None:
                trail.close()
    except OSError as exc:
        raise ReviewError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)  # releases the lock
    return action


def _open_trail(pipeline: LoadedPipeline) -> AuditStore | None:
    if not pipeline.spec.audit.enabled:
        return None
    try:
        return open_store(pipeline.spec.audit.url, pipeline.base_dir)
    except AuditError as exc:
        raise ReviewError(str(exc)) from None


def _audit_review(
    store: AuditStore,
    pipeline: LoadedPipeline,
    item: Flagged,
    reviewer: str,
    action: str,
    changed: list[str],
    outputs: dict[str, dict[str, Any]],
) -> None:
    """The review as a record of the audit trail: who, when, and each stage's output hash before and after."""
    key = store.key(item.id)
    name = pipeline.spec.pipeline
    hashes = {
        stage: {"before": output_hash(item.outputs.get(stage) or {}), "after": output_hash(output)}
        for stage, output in outputs.items()
    }
    latest = store.decisions(key, pipeline=name)
    entry = review_entry(
        name, key, reviewer, action, changed, hashes, time.time(), latest[0]["run_id"] if latest else None
    )
    try:
        store.append([entry])
    except AuditError as exc:
        raise ReviewError(str(exc)) from None


def export(pipeline: LoadedPipeline, folder: Path, target: Path) -> int:
    """Write every reviewed document as a labelled example (its text read again from its source); how many.

    A document whose source can no longer be read is left out (its text is what a dataset needs).
    """
    own = [folder / REVIEWED_NAME, folder / LOG_NAME, _sink_file(pipeline, folder)]
    if any(_same_file(target, path) for path in own):
        raise ReviewError(f"{target}: is the run's own output (the review's record or the sink); export elsewhere")
    reviewed = {row["id"]: row for row in sink_rows(folder / REVIEWED_NAME)}
    lines = []
    for doc_id, row in reviewed.items():
        source = Path(str(row.get("source", "")))
        document = read_file(source, doc_id) if source.is_file() else None
        if document is None or document.load_error or not document.text:
            continue
        by = (row.get("reviewed") or {}).get("by", "")
        expected = {stage: output for stage, output in (row.get("outputs") or {}).items() if output}
        if not expected:
            continue
        example = {"id": doc_id, "text": document.text, "expected": expected, "tags": ["reviewed", f"by:{by}"]}
        lines.append(json.dumps(example, ensure_ascii=False) + "\n")
    try:
        target.write_text("".join(lines), encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"{target}: cannot write ({exc.strerror or type(exc).__name__})") from None
    return len(lines)


def _same_file(target: Path, path: Path) -> bool:
    try:
        return target.resolve() == path.resolve() or (path.exists() and target.exists() and target.samefile(path))
    except OSError:
        return False


MAX_SHOWN_CHARS = 2 * MIB // 1024
"""Characters of a document shown to a reviewer in the terminal."""


def document_text(item: Flagged) -> str | None:
    """The flagged document's text, read again from its source file (bounded), or None when it cannot be."""
    source = Path(item.source)
    if not source.is_file():
        return None
    document = read_file(source, item.id)
    return None if document.load_error else document.text
