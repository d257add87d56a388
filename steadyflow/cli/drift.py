"""``steadyflow compare``: whether a run's outputs, rungs, checks, review, cost or latency drifted from earlier runs."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from steadyflow.cli import EXIT_INVALID, app, read_stores

EXIT_SHIFTED = 1
"""A shift was flagged: a scheduled flow or a cron job alerts on it (so does an unexpected error, which says so)."""


@app.command()
def compare(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="RUN_A RUN_B (baseline, then current); or one RUN against the --last runs before it; "
            "none: the newest finished run against the --last before it ('last' names the newest)",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path, typer.Option(help="the runs' decisions.sqlite (its runs.sqlite is read from the same folder)")
    ] = Path("out/decisions.sqlite"),
    last: Annotated[int, typer.Option(min=1, max=1000, help="with one run or none: pool this many earlier runs")] = 1,
    psi: Annotated[float, typer.Option(min=0.0, help="flag a distribution whose PSI is at least this")] = 0.2,
    rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="flag a check failure rate or review share moving this much")
    ] = 0.05,
    cost: Annotated[float, typer.Option(min=0.0, help="flag a mean cost per document rising by this share")] = 0.25,
    latency: Annotated[float, typer.Option(min=0.0, help="flag a p50 or p95 latency rising by this share")] = 0.5,
    latency_ms: Annotated[float, typer.Option(min=0.0, help="...and by at least this many milliseconds")] = 500.0,
    min_documents: Annotated[int, typer.Option(min=1, help="fewer documents on a side: shown, never flagged")] = 30,
    report: Annotated[
        Path | None, typer.Option(help="write the comparison with its charts to this .md or .html file")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Drift between runs of a pipeline; exits 1 when something shifted beyond its threshold and beyond chance.

    Compares each output field's distribution (shares per enum value with a population stability index, number
    quantiles, text lengths), the rungs documents ended on, check failure rates, the review share, and cost
    and latency per document. Two runs of the same inputs differ a little: a shift is flagged only when it
    passes its threshold and is unlikely to be chance at the documents counted (p < 0.001).
    """
    from steadyflow.audit import drift, drift_view

    log, ledger = read_stores(db)
    if ledger is None:
        typer.echo(f"{db}: no runs recorded next to it", err=True)
        raise typer.Exit(EXIT_INVALID)
    finished = ledger.run_ids(finished=True)
    baseline, current = _sides(list(runs or []), finished, last, ledger.earlier_runs)
    pipelines = {(ledger.run_info(run) or {}).get("pipeline") for run in [*baseline, current]}
    if len(pipelines) > 1:
        _refuse(f"these runs are of different pipelines ({', '.join(sorted(map(str, pipelines)))}): nothing to compare")
    limits = drift.Thresholds(psi, rate, cost, latency, latency_ms, min_documents)
    try:
        base = drift.profile(baseline, log.profile_rows(baseline))
        cur = drift.profile([current], log.profile_rows([current]))
    except sqlite3.Error as exc:  # a damaged file; an old one is read without the columns it lacks
        _refuse(f"--db {db}: cannot read its records ({exc})")
    finally:
        log.close()
        ledger.close()
    shifts = drift.compare(base, cur, limits)
    names = (baseline[0] if len(baseline) == 1 else f"{len(baseline)} runs before", current)
    if report is not None:
        _write(report, drift_view.markdown(base, cur, shifts, names))
        typer.echo(f"report with charts: {report}", err=True)
    data = drift.report(base, cur, shifts, limits)
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        typer.echo(f"{current} ({cur.documents} documents) against {', '.join(baseline)} ({base.documents} documents)")
        if len(runs or []) < 2 and len(baseline) < last:
            typer.echo(f"only {len(baseline)} finished run(s) of this pipeline before it, of the --last {last} asked")
        for line in drift_view.lines(shifts):
            typer.echo(line)
        if min(base.documents, cur.documents) < min_documents:
            typer.echo(f"too few documents to flag anything (fewer than --min-documents {min_documents} on a side)")
        if report is None:
            typer.echo("--json prints every quantity; --report drift.html draws them")
    if data["flagged"]:
        raise typer.Exit(EXIT_SHIFTED)


def _sides(given: list[str], finished: list[str], last: int, earlier: object) -> tuple[list[str], str]:
    """(baseline runs, current run) from the arguments; a bad argument exits 2 with one line."""
    if len(given) > 2:
        _refuse("give at most two runs: RUN_A RUN_B, or one RUN to compare against the --last runs before it")
    known = ", ".join(finished[:5]) or "none"
    resolved = [finished[0] if name == "last" and finished else name for name in given]
    for name in resolved:
        if name not in finished:
            _refuse(f"no finished run '{name}' in this folder (newest: {known})")
    if len(resolved) == 2:
        if resolved[0] == resolved[1]:
            _refuse(f"'{resolved[0]}' twice: give two different runs")
        return [resolved[0]], resolved[1]
    if not finished:
        _refuse("no finished run in this folder")
    current = resolved[0] if resolved else finished[0]
    baseline = earlier(current, last)  # type: ignore[operator]
    if not baseline:
        _refuse(f"no finished run of the same pipeline before '{current}' to compare it with")
    return list(baseline), current


def _refuse(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_INVALID)


def _write(path: Path, markdown: str) -> None:
    """The report as markdown, or as a page a browser shows (``.html``); an unwritable path is one line, exit 2."""
    text = markdown
    if path.suffix.lower() in (".html", ".htm"):
        from steadyflow.core.markdown import page

        text = page(markdown, "steadyflow drift")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _refuse(f"--report {path}: {exc.strerror or type(exc).__name__}")
