"""What each kind of audit record says: payloads built from decision records and a run's context.

A run's context is who ran it (the actor) and the policy in force (:mod:`steadyflow.runner.provenance`
works both out); every decision carries both, so one record answers "who decided this, and how?" on
its own. Payloads hold names, hashes, numbers and error kinds, never document text: a document is its
key (the store's HMAC of its id), its hashes and where its source holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steadyflow.audit.records import DecisionRecord
from steadyflow.audit.trail import Entry, iso

_ATTEMPT_FIELDS = (
    "rung",
    "kind",
    "model",
    "response_model",
    "system_fingerprint",
    "error_kind",
    "error",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "waited_ms",
)
_VERDICT_FIELDS = ("check", "layer", "passed", "action", "message", "rung")


@dataclass
class RunContext:
    """What every record of one run shares: its id, pipeline, actor and policy."""

    run_id: str
    pipeline: str
    version: str
    actor: dict[str, Any]
    """name, via ('option': --actor, 'STEADYFLOW_ACTOR' or 'login'); the Prefect flow run and deployment if any."""
    policy: dict[str, Any]
    """hash (of the loaded pipeline, overrides included), snapshot, git (commit, dirty), files (path -> sha256)."""


def run_entry(context: RunContext, source: dict[str, Any] | None, resumed: bool, key_id: str | None) -> Entry:
    """The record of a run starting (or resuming): who, which policy, which source, signed with which key."""
    payload = {
        "run_id": context.run_id,
        "pipeline": {"name": context.pipeline, "version": context.version},
        "actor": context.actor,
        "policy": context.policy,
        "source": source,
        "resumed": resumed,
        "signing_key": key_id,
    }
    return Entry("run", payload, run_id=context.run_id, pipeline=context.pipeline)


def decision_entry(record: DecisionRecord, key: str, context: RunContext) -> Entry:
    """The record of one document's decision in one stage: how its output was produced, by whose run, at what cost."""
    attempts = record.attempts_json()
    verdicts = record.verdicts_json()
    payload = {
        "run_id": record.run_id,
        "stage": record.stage_id,
        "pipeline": {"name": record.pipeline, "version": record.pipeline_version},
        "actor": context.actor,
        "policy": context.policy,
        "input": {
            "input_hash": record.input_hash,
            "document_hash": record.document_hash,
            "source_ref": record.source_ref,
        },
        "prompt_version": record.prompt_version,
        "model": record.model,
        "parameters": record.parameters,
        "attempts": [{name: attempt.get(name) for name in _ATTEMPT_FIELDS} for attempt in attempts],
        "verdicts": [{name: verdict.get(name) for name in _VERDICT_FIELDS} for verdict in verdicts],
        "status": record.status,
        "rung": record.rung,
        "rung_label": record.rung_label,
        "review_required": record.review,
        "reason": record.reason,
        "route": record.route,
        "output_hash": record.output_hash,
        "cost_usd": round(record.cost_usd, 8),
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "latency_ms": record.latency_ms,
        "started_at": iso(record.started_at) if record.started_at else None,
        "ended_at": iso(record.ended_at) if record.ended_at else None,
    }
    return Entry(
        "decision", payload, run_id=record.run_id, doc_key=key, stage_id=record.stage_id, pipeline=record.pipeline
    )


def run_end_entry(context: RunContext, totals: dict[str, Any]) -> Entry:
    """The record of a run finishing: its counts and cost (a run that never finishes has none)."""
    return Entry("run_end", {"run_id": context.run_id, **totals}, run_id=context.run_id, pipeline=context.pipeline)


def review_entry(
    pipeline: str,
    key: str,
    reviewer: str,
    action: str,
    changed: list[str],
    hashes: dict[str, dict[str, str]],
    decided_at: float,
    run_id: str | None,
) -> Entry:
    """The record of a person's review: who, when, what they did, which fields changed, the outputs' hashes.

    ``hashes`` is stage -> {before, after}: the output hash the run recorded and the one the review left.
    """
    payload = {
        "reviewer": reviewer,
        "action": action,
        "changed": changed,
        "outputs": hashes,
        "decided_at": iso(decided_at),
        "run_id": run_id,
    }
    return Entry("review", payload, run_id=run_id, doc_key=key, pipeline=pipeline)
