"""The run's summary as a Prefect markdown artifact, shown on the flow run's page in the UI."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import acreate_markdown_artifact

from steadyflow.audit import drift, drift_view
from steadyflow.runner.summary import RunSummary


def artifact_key(pipeline: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes; one key per pipeline keeps its history."""
    return "steadyflow-" + re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")


def _md(text: str) -> str:
    # names come from the pipeline file, but escape table syntax anyway
    return text.replace("|", "\\|").replace("\n", " ")


def render_summary(
    summary: RunSummary,
    overview: dict[str, Any],
    profiles: tuple[drift.Profile, drift.Profile | None] | None = None,
) -> str:
    """Markdown of a run.

    It shows documents by rung and why they fell, quarantined, cost, latency and queueing p50/p95, failing validators;
    with ``profiles`` (:func:`steadyflow.audit.report.run_profiles`), charts of rungs, cost per document and each
    output field beside the previous run's, and what drifted since it.

    ``overview`` is :func:`steadyflow.audit.report.run_overview` for the run, so a resumed run shows all of it.
    """
    latency, queue = overview["latency_ms"], overview["queue_ms"]
    lines = [
        f"# steadyflow run `{summary.run_id}`: {_md(summary.pipeline)}",
        "",
        (
            "| documents | outputs | quarantined | cost (USD) | tokens "
            "| latency p50 | latency p95 | queued p50 | queued p95 |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        (
            f"| {overview['documents']} | {overview['outputs']} | {overview['quarantined']} "
            f"| {overview['cost_usd']:.6f} | {overview['tokens']} "
            f"| {_ms(latency['p50'])} | {_ms(latency['p95'])} | {_ms(queue['p50'])} | {_ms(queue['p95'])} |"
        ),
        "",
        (
            "Latency is a document's own time over its stages; "
            "*queued* is the time it waited for a concurrency slot before."
        ),
        "",
        "## Documents by rung",
        "",
        "| stage | ended at | documents |",
        "|---|---|---:|",
    ]
    for stage, counts in overview["by_rung"].items():
        lines += [f"| {_md(stage)} | {_md(rung)} | {count} |" for rung, count in counts.items()]
    lines += _reasons(overview["fallback_reasons"])
    lines += ["", "## Failing validators", ""]
    if overview["failed_checks"]:
        lines += ["| check:action | verdicts |", "|---|---:|"]
        lines += [f"| {_md(name)} | {count} |" for name, count in overview["failed_checks"].items()]
    else:
        lines.append("No check failed.")
    lines += [
        "",
        f"This attempt: {summary.documents} documents in {summary.duration_s:.1f} s"
        + (f", {summary.resumed} already completed by an earlier attempt (resumed)" if summary.resumed else "")
        + ".",
    ]
    if summary.breakers_opened:
        lines.append(
            "Circuit breakers opened: " + ", ".join(f"{_md(k)} {v}x" for k, v in summary.breakers_opened.items()) + "."
        )
    if summary.budget_skipped:
        lines.append(f"Model calls skipped because a budget was spent: {summary.budget_skipped}.")
    if profiles is not None:
        lines += _pictures(summary.run_id, *profiles)
    lines += [
        "",
        f"Outputs: `{_md(summary.output_path)}`  ",
        f"Quarantine: `{_md(summary.quarantine_path)}`  ",
        f"Decision records: `{_md(summary.decisions_path)}` (`steadyflow report {summary.run_id} --db ...`)",
    ]
    return "\n".join(lines) + "\n"


def _pictures(run_id: str, current: drift.Profile, previous: drift.Profile | None) -> list[str]:
    """Charts of this run beside the previous one, and what drifted since (``steadyflow compare`` says more)."""
    shown = [(f"run {run_id}", current)]
    if previous is not None:
        shown.insert(0, (f"previous run {previous.runs[0]}", previous))
    lines = ["", "## Pictures", ""]
    lines += [drift_view.chart_rungs(shown), "", drift_view.chart_cost(shown), ""]
    lines += [line for chart in drift_view.chart_fields(shown) for line in (chart, "")]
    if previous is None:
        return [*lines, "The first finished run of this pipeline in this folder: nothing to compare it with yet."]
    shifts = drift.compare(previous, current, drift.Thresholds())
    flagged = [s for s in shifts if s.flagged]
    lines += ["## Drift since the previous run", ""]
    if not flagged:
        lines.append(f"Nothing shifted beyond its threshold and chance ({len(shifts)} quantities compared).")
    else:
        lines += drift_view.table(flagged)
    lines += ["", f"`steadyflow compare {previous.runs[0]} {run_id} --db ...` compares every quantity."]
    return lines


def _reasons(fallback: dict[str, dict[str, dict[str, dict[str, int]]]]) -> list[str]:
    """Why documents fell down the ladder.

    Per stage and rung ended on, the failures of the rungs above (top reasons).
    """
    lines = ["", "## Why documents fell down the ladder", ""]
    if not fallback:
        return [*lines, "No document fell below its first model rung, and none was quarantined."]
    lines += ["| stage | ended at | failed rung | reason | documents |", "|---|---|---|---|---:|"]
    for stage, by_ended in fallback.items():
        for ended, by_source in by_ended.items():
            lines += [
                f"| {_md(stage)} | {_md(ended)} | {_md(source)} | {_md(reason)} | {n} |"
                for source, reasons in by_source.items()
                for reason, n in reasons.items()
            ]
    return lines


def one_line(summary: RunSummary, overview: dict[str, Any]) -> str:
    """The summary in one line: the artifact's description, shown on the flow run page's Artifacts tab."""
    rungs = "; ".join(
        f"{stage}: " + ", ".join(f"{rung} {n}" for rung, n in counts.items())
        for stage, counts in overview["by_rung"].items()
    )
    failing = ", ".join(f"{name} {n}" for name, n in list(overview["failed_checks"].items())[:5]) or "none"
    latency = overview["latency_ms"]
    return (
        f"run {summary.run_id}: {overview['documents']} documents, {overview['outputs']} outputs, "
        f"{overview['quarantined']} quarantined | cost ${overview['cost_usd']:.6f} | "
        f"latency p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])} | "
        f"by rung: {rungs} | failing validators: {failing}"
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"


async def publish_summary(
    summary: RunSummary,
    overview: dict[str, Any],
    profiles: tuple[drift.Profile, drift.Profile | None] | None = None,
) -> None:
    """Attach the run's summary to its flow run."""
    await acreate_markdown_artifact(
        render_summary(summary, overview, profiles),
        key=artifact_key(summary.pipeline),
        description=_md(one_line(summary, overview)),
    )
