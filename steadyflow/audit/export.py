"""``steadyflow audit export``: one flat row per decision and review in a period, for record-keeping.

The columns answer what record-keeping rules ask of an automated decision (for instance Art. 12 of the
EU AI Act for high-risk systems): the period of each use (``use_started_at``, ``use_ended_at``), a
reference to the input data (``document_key``, ``document_hash``, ``source_ref``, the run's ``source``),
the reference data it was checked against (``policy_hash``, ``policy_files``, ``prompt_version``), who ran it
(``actor``) and who verified the result (``verified_by``, ``verified_at``, ``verification``). Nested values
(attempts, failed checks, files) are JSON text in CSV, objects in JSONL. Rows are streamed: flat memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

from steadyflow.audit.trail import RECORDS, AuditStore

FIELDS = (
    "record",
    "record_hash",
    "kind",
    "recorded_at",
    "use_started_at",
    "use_ended_at",
    "run_id",
    "pipeline",
    "pipeline_version",
    "actor",
    "actor_via",
    "prefect_flow_run",
    "prefect_deployment",
    "policy_hash",
    "git_commit",
    "git_dirty",
    "policy_files",
    "document_key",
    "document_hash",
    "input_hash",
    "source_ref",
    "source",
    "stage",
    "prompt_version",
    "model",
    "response_models",
    "system_fingerprints",
    "attempts",
    "failed_checks",
    "status",
    "rung",
    "rung_label",
    "review_required",
    "reason",
    "output_hash",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "verified_by",
    "verified_at",
    "verification",
    "changed_fields",
)


def _sources(store: AuditStore) -> dict[str, Any]:
    """Run id -> the source its run record names (runs are few beside their decisions)."""
    found: dict[str, Any] = {}
    for row in store.rows(RECORDS.c.kind == "run"):
        found[row["run_id"]] = json.loads(row["payload"]).get("source")
    return found


Reviewed = tuple[str | None, str | None, str | None]
"""(pipeline, document key, run id): a review verifies the decisions of the run it was taken on."""


def _reviews(store: AuditStore) -> dict[Reviewed, dict[str, Any]]:
    """(pipeline, document key, run) -> the latest review of that document's output (who verified it, when, how)."""
    found = {}
    for row in store.rows(RECORDS.c.kind == "review"):
        found[row["pipeline"], row["doc_key"], row["run_id"]] = json.loads(row["payload"])
    return found


def rows(store: AuditStore, start: str, end: str) -> Iterator[dict[str, Any]]:
    """Decision and review records recorded in [``start``, ``end``) (ISO UTC), as flat rows in chain order."""
    sources, reviews = _sources(store), _reviews(store)
    kinds = RECORDS.c.kind.in_(("decision", "review"))
    for row in store.rows(kinds & (RECORDS.c.at >= start) & (RECORDS.c.at < end)):
        payload = json.loads(row["payload"])
        flat: dict[str, Any] = dict.fromkeys(FIELDS)
        flat.update(record=row["seq"], record_hash=row["hash"], kind=row["kind"], recorded_at=row["at"])
        flat.update(run_id=row["run_id"], pipeline=row["pipeline"], document_key=row["doc_key"], stage=row["stage_id"])
        if row["kind"] == "decision":
            review = reviews.get((row["pipeline"], row["doc_key"], row["run_id"]))
            _decision(flat, payload, sources.get(row["run_id"]), review)
        else:
            _verified(flat, payload)
            flat.update(use_started_at=payload.get("decided_at"), use_ended_at=payload.get("decided_at"))
            flat["changed_fields"] = payload.get("changed")
        yield flat


def _decision(flat: dict[str, Any], payload: dict[str, Any], source: Any, review: dict[str, Any] | None) -> None:
    actor, policy = payload.get("actor") or {}, payload.get("policy") or {}
    git, document = policy.get("git") or {}, payload.get("input") or {}
    attempts = payload.get("attempts") or []
    flat.update(
        use_started_at=payload.get("started_at"),
        use_ended_at=payload.get("ended_at"),
        pipeline_version=(payload.get("pipeline") or {}).get("version"),
        actor=actor.get("name"),
        actor_via=actor.get("via"),
        prefect_flow_run=actor.get("prefect_flow_run"),
        prefect_deployment=actor.get("prefect_deployment"),
        policy_hash=policy.get("hash"),
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty"),
        policy_files=policy.get("files"),
        document_hash=document.get("document_hash"),
        input_hash=document.get("input_hash"),
        source_ref=document.get("source_ref"),
        source=(source or {}).get("path") if isinstance(source, dict) else None,
        prompt_version=payload.get("prompt_version"),
        model=payload.get("model"),
        response_models=sorted({a["response_model"] for a in attempts if a.get("response_model")}),
        system_fingerprints=sorted({a["system_fingerprint"] for a in attempts if a.get("system_fingerprint")}),
        attempts=[{k: a.get(k) for k in ("rung", "model", "error_kind", "cost_usd")} for a in attempts],
        failed_checks=[
            f"{v.get('check')}:{v.get('action')}" for v in payload.get("verdicts") or [] if not v.get("passed")
        ],
        status=payload.get("status"),
        rung=payload.get("rung"),
        rung_label=payload.get("rung_label"),
        review_required=payload.get("review_required"),
        reason=payload.get("reason"),
        output_hash=payload.get("output_hash"),
        cost_usd=payload.get("cost_usd"),
        tokens_in=payload.get("tokens_in"),
        tokens_out=payload.get("tokens_out"),
    )
    if review is not None:
        _verified(flat, review)


def _verified(flat: dict[str, Any], review: dict[str, Any]) -> None:
    flat.update(
        verified_by=review.get("reviewer"), verified_at=review.get("decided_at"), verification=review.get("action")
    )


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: nested values as JSON; text a spreadsheet would run as a formula is quoted with a leading '."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def write(store: AuditStore, start: str, end: str, fmt: str, out: IO[str]) -> int:
    """Write the rows of [``start``, ``end``) to ``out`` as ``jsonl`` or ``csv``; how many."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows(store, start, end):
            writer.writerow({name: _cell(value) for name, value in row.items()})
            count += 1
    else:
        for row in rows(store, start, end):
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
    return count
