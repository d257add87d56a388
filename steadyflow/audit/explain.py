"""``steadyflow audit explain``: how one document's output was produced, in plain words, from the audit trail.

Everything said comes from the trail's records of that document (its decisions in one run, that run's
start and end, and every review of it), whose hashes are checked again here; ``audit verify`` checks
the whole chain.
"""

from __future__ import annotations

import json
from typing import Any

from steadyflow.audit.chain import AuditError, record_hash
from steadyflow.audit.trail import RECORDS, AuditStore
from steadyflow.core.vocabulary import ended_by


def explanation(store: AuditStore, doc_id: str, run_id: str | None = None) -> dict[str, Any]:
    """What the trail holds on ``doc_id`` in ``run_id`` (else its newest run): the run, its decisions, reviews.

    Raises :class:`AuditError` when the trail has no decision on that document (in that run).
    """
    key = store.key(doc_id)
    decisions = store.decisions(key, run_id)
    if not decisions:
        where = f" in run {run_id}" if run_id else ""
        raise AuditError(f"audit store {store.shown}: no decision on that document{where}")
    run = decisions[0]["run_id"]
    started = next(store.rows((RECORDS.c.kind == "run") & (RECORDS.c.run_id == run), newest_first=True), None)
    ended = next(store.rows((RECORDS.c.kind == "run_end") & (RECORDS.c.run_id == run)), None)
    reviews = list(store.rows((RECORDS.c.kind == "review") & (RECORDS.c.doc_key == key)))
    rows = [row for row in (started, *decisions, ended, *reviews) if row is not None]
    edited = [row["seq"] for row in rows if record_hash(row) != row["hash"]]
    return {
        "key": key,
        "run_id": run,
        "run": _payload(started),
        "run_end": _payload(ended),
        "stages": [{**_payload(row), "record": row["seq"], "recorded_at": row["at"]} for row in decisions],
        "reviews": [{**_payload(row), "record": row["seq"]} for row in reviews],
        "records": [row["seq"] for row in rows],
        "edited_records": edited,
        "store": store.shown,
    }


def _payload(row: dict[str, Any] | None) -> dict[str, Any]:
    return json.loads(row["payload"]) if row is not None else {}


def _short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "none"


_VIA = {"option": "given with --actor", "STEADYFLOW_ACTOR": "from $STEADYFLOW_ACTOR", "login": "the login and host"}


def _who(actor: dict[str, Any]) -> str:
    via = actor.get("via", "")
    text = f"{actor.get('name', 'unknown')} ({_VIA.get(via, via or 'unknown')})"
    if actor.get("prefect_deployment"):
        text += f", scheduled by the Prefect deployment {actor['prefect_deployment']}"
    if actor.get("prefect_flow_run"):
        text += f", Prefect flow run {actor['prefect_flow_run']}"
    return text


def _policy(policy: dict[str, Any]) -> list[str]:
    git = policy.get("git")
    if git:
        state = {True: "with uncommitted changes", False: "clean", None: "state unknown"}[git.get("dirty")]
        where = f"git commit {_short(git.get('commit'))} ({state})"
    else:
        where = "not in a git repository"
    lines = [f"Policy {_short(policy.get('hash'), 16)} (the pipeline as loaded, overrides included); {where}."]
    files = ", ".join(f"{name} {_short(digest)}" for name, digest in (policy.get("files") or {}).items())
    if files:
        lines.append(f"Files (SHA-256): {files}.")
    return lines


def _attempt(number: int, attempt: dict[str, Any]) -> str:
    if attempt.get("kind") != "model":
        what = f"Attempt {number}: rung {attempt.get('rung')}, {attempt.get('kind')}"
    else:
        what = f"Attempt {number}: rung {attempt.get('rung')}, model {attempt.get('model')}"
        if attempt.get("response_model"):
            what += f", answered as {attempt['response_model']}"
        if attempt.get("system_fingerprint"):
            what += f" (fingerprint {attempt['system_fingerprint']})"
    if attempt.get("error_kind"):
        outcome = f"failed: {attempt['error_kind']}" + (f" ({attempt['error']})" if attempt.get("error") else "")
    else:
        outcome = "answered"
    cost = f"{attempt.get('tokens_in', 0)}+{attempt.get('tokens_out', 0)} tokens, ${attempt.get('cost_usd', 0):.6f}"
    return f"{what}: {outcome}; {attempt.get('latency_ms', 0):.0f} ms, {cost}."


def _verdict(verdict: dict[str, Any]) -> str:
    check = f"{verdict.get('check')} ({verdict.get('layer')})"
    if verdict.get("passed"):
        return f"{check} passed"
    rung = f" on rung {verdict['rung']}" if verdict.get("rung") is not None else ""
    message = f": {verdict['message']}" if verdict.get("message") else ""
    return f"{check} failed{rung} -> {verdict.get('action')}{message}"


def _route(route: dict[str, Any]) -> list[str]:
    """Where routing entered the document and why; with adaptive routing, the estimates that chose it."""
    adaptive = route.get("adaptive") or {}
    why = adaptive.get("why") or "the pipeline's enter classes (by price where a class has none)"
    band = f", band {adaptive['band']}" if adaptive.get("band") else ""
    lines = [
        f"  Routing: complexity {route.get('complexity')} ({route.get('estimator')} score {route.get('score')}{band}), "
        f"entered at rung {route.get('entry')}: {why}."
    ]
    for model, found in (adaptive.get("estimates") or {}).items():
        lines.append(
            f"    {model}: first answers passing {found.get('pass')} over {found.get('n')} answers, accepted "
            f"{found.get('accept')}, failed {found.get('failed')}, ${found.get('cost_usd')}, "
            f"{found.get('latency_ms')} ms, expected cost and latency {found.get('score')}"
        )
    rest = {k: v for k, v in route.items() if k not in ("adaptive", "complexity", "estimator", "score", "entry")}
    return lines + ([f"    also: {json.dumps(rest, sort_keys=True)}"] if rest else [])


def _stage(stage: dict[str, Any]) -> list[str]:
    ended = ended_by(stage.get("status", ""), stage.get("rung_label"))
    head = f"Stage {stage.get('stage')}: {stage.get('status')}"
    head += f", ended by {ended}" + (f" on rung {stage['rung']}" if stage.get("rung") is not None else "")
    if stage.get("reason"):
        head += f" ({stage['reason']})"
    lines = [head + "."]
    source = stage.get("input") or {}
    lines.append(
        f"  Input: text SHA-256 {_short(source.get('input_hash'))}, document {_short(source.get('document_hash'))}"
        f" ({source.get('source_ref') or 'no place recorded'})."
    )
    model = stage.get("model") or "no model"
    lines.append(f"  Prompt version {stage.get('prompt_version') or 'none'}; accepted model: {model}.")
    attempts = stage.get("attempts") or []
    lines += [f"  {_attempt(n, attempt)}" for n, attempt in enumerate(attempts, start=1)] or ["  No attempt."]
    verdicts = stage.get("verdicts") or []
    lines.append("  Checks: " + ("; ".join(_verdict(v) for v in verdicts) if verdicts else "none ran") + ".")
    if stage.get("route"):
        lines += _route(stage["route"])
    output = f"output SHA-256 {_short(stage.get('output_hash'), 16)}" if stage.get("output_hash") else "no output"
    review = "flagged for review" if stage.get("review_required") else "not flagged for review"
    lines.append(f"  Result: {output}; {review}.")
    lines.append(
        f"  Cost: ${stage.get('cost_usd', 0):.6f}, {stage.get('tokens_in', 0)}+{stage.get('tokens_out', 0)} tokens,"
        f" {stage.get('latency_ms', 0):.0f} ms (from {stage.get('started_at')} to {stage.get('ended_at')})."
    )
    return lines


def _review(review: dict[str, Any]) -> str:
    changed = ", ".join(review.get("changed") or []) or "nothing"
    hashes = "; ".join(
        f"{stage} {_short(pair.get('before'))} -> {_short(pair.get('after'))}"
        for stage, pair in (review.get("outputs") or {}).items()
    )
    who = f"{str(review.get('action', '')).capitalize()} by {review.get('reviewer')} at {review.get('decided_at')}"
    return f"{who}: changed {changed}; outputs {hashes}."


def render(doc_id: str, found: dict[str, Any]) -> str:
    """The explanation as plain text, a few lines per stage."""
    run, stages = found["run"], found["stages"]
    pipeline = run.get("pipeline") or stages[0].get("pipeline") or {}
    name = f"{pipeline.get('name')} {pipeline.get('version')}"
    lines = [f"Document {doc_id} (key {found['key']}), run {found['run_id']} of {name}."]
    actor = run.get("actor") or stages[0].get("actor") or {}
    lines.append(f"Run by {_who(actor)}.")
    lines += _policy(run.get("policy") or stages[0].get("policy") or {})
    for stage in stages:
        lines += _stage(stage)
    total = sum(float(stage.get("cost_usd") or 0) for stage in stages)
    lines.append(
        f"Total cost of this document: ${total:.6f} over {sum(len(s.get('attempts') or []) for s in stages)} attempts."
    )
    reviews = found["reviews"]
    lines += [_review(review) for review in reviews] or ["No one has reviewed it."]
    if not found["run_end"]:
        lines.append("The run has no end record: it was stopped, or is still running.")
    lines.append(f"Records {', '.join(str(seq) for seq in found['records'])} of the audit store {found['store']}.")
    if found["edited_records"]:
        lines.append(f"WARNING: records {found['edited_records']} do not match their hashes: they were edited.")
    else:
        lines.append("Each record matches its hash; `steadyflow audit verify` checks the whole chain.")
    return "\n".join(lines)
