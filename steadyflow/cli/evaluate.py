"""``steadyflow eval``: how often a pipeline is right, on a labelled dataset; a gate for CI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.spec.errors import SpecError

_REPORT_SUFFIXES = (".md", ".markdown", ".html", ".htm")


def _write_report(report: Path, evaluation: Any) -> str | None:
    """Write the report; the one-line error if it could not be (the evaluation is printed anyway)."""
    from steadyflow.evals.report import as_html, markdown

    try:
        page = as_html(evaluation) if report.suffix.lower() in (".html", ".htm") else markdown(evaluation)
        report.write_text(page, encoding="utf-8")
    except OSError as exc:
        return f"{report}: cannot write the report ({exc.strerror or type(exc).__name__})"
    return None


def _check_report_path(report: Path) -> None:
    """Refuse a --report path that cannot be written before any model call, not after all of them."""
    if report.is_dir():
        raise ValueError(f"--report {report}: is a directory; name a file in it, e.g. {report / 'eval.md'}")
    if report.suffix.lower() not in _REPORT_SUFFIXES:
        raise ValueError(f"--report {report}: name a .md or .html file")
    folder = report.parent
    if not folder.is_dir():
        raise ValueError(f"--report {report}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (report.exists() and not os.access(report, os.W_OK)):
        raise ValueError(f"--report {report}: not writable here; choose another path")


def _gates(specs: list[str], fields: list[str]) -> list[tuple[str, str, float]]:
    """``FIELD=0.9`` -> (what, field, minimum); what is 'accuracy', 'accepted' or 'coverage'."""
    gates = []
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            minimum = float(value)
        except ValueError:
            minimum = -1.0
        if not sep or not 0 <= minimum <= 1:
            raise ValueError(f"--fail-under {spec}: expected FIELD=0.9 (a share between 0 and 1)")
        what, _, field = name.rpartition(":") if name.startswith("accepted:") else ("accuracy", "", name)
        if name == "coverage":
            gates.append(("coverage", "", minimum))
            continue
        matches = [f for f in fields if f == field or f.split(".", 1)[1] == field]
        if len(matches) != 1:
            known = ", ".join(fields) or "none"
            raise ValueError(
                f"--fail-under {spec}: no single labelled field '{field}' (labelled: {known}; or coverage)"
            )
        gates.append((what, matches[0], minimum))
    return gates


def _failures(gates: list[tuple[str, str, float]], data: dict[str, Any]) -> list[str]:
    failed = []
    for what, field, minimum in gates:
        if what == "coverage":
            value, label = data["coverage"], "coverage"
        else:
            key = "accuracy" if what == "accuracy" else "accepted_accuracy"
            value, label = (
                data["fields"][field][key],
                f"{field} {'accuracy' if what == 'accuracy' else 'accuracy of accepted'}",
            )
        if value is None or value < minimum:
            shown = "none" if value is None else f"{value:.3f}"
            failed.append(f"{label} {shown} < {minimum}")
    return failed


@app.command("eval")
def eval_command(
    file: Annotated[Path, typer.Argument(help="pipeline file")],
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="labelled dataset (.jsonl or .csv)")],
    stage: Annotated[str | None, typer.Option(help="the stage flat labels belong to (default: the last)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the evaluation as one JSON object")] = False,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under",
            help="FIELD=0.9: exit 1 when the field's accuracy is lower; accepted:FIELD=0.9 for the accuracy of "
            "accepted outputs; coverage=0.6 for the share accepted",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the report here (.md or .html)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="documents in flight")] = 8,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect",
            help="run as a Prefect flow (chunks of --chunk-size documents as tasks) and publish the report as an "
            "artifact; PREFECT_API_URL names a server, else Prefect's ephemeral API",
        ),
    ] = False,
    chunk_size: Annotated[int, typer.Option(min=1, max=100_000, help="--prefect: documents per task")] = 50,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a value: dotted.key=value")] = None,
) -> None:
    """Run the pipeline over a labelled dataset and score it; exit 1 below a --fail-under.

    Prints accuracy per field, rung and model, confusion matrices, coverage, the accuracy of what
    was accepted, the confidence curve, cost and latency. No Prefect; nothing is written but --report.
    """
    from steadyflow.api import Pipeline
    from steadyflow.evals.dataset import DatasetError
    from steadyflow.evals.report import text
    from steadyflow.evals.runner import read_dataset
    from steadyflow.evals.scorers import ScorerError
    from steadyflow.providers.local_model import LocalModelError
    from steadyflow.stages.checks import load_checked

    try:
        pipeline = Pipeline(load_checked(file, overrides or []), list(overrides or []), check_workers=None)
    except SpecError as exc:
        _fail(exc)
    try:
        if report is not None:
            _check_report_path(report)
        data = read_dataset(pipeline, dataset, stage)
        labelled = sorted({f"{s}.{f}" for e in data.examples for s, fields in e.expected.items() for f in fields})
        gates = _gates(fail_under or [], labelled)
        unknown = [name for name in labelled if name.split(".", 1)[0] not in pipeline.stages]
        if unknown:
            raise DatasetError(f"{dataset}: labels for stages the pipeline does not have: {', '.join(unknown)}")
    except (DatasetError, ScorerError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    progress = _progress if sys.stderr.isatty() and not as_json else None
    try:
        evaluation = asyncio.run(_evaluate(pipeline, data, concurrency, progress, chunk_size if prefect else None))
    except ScorerError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except (LocalModelError, OSError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    summary = evaluation.as_dict()
    unwritten = _write_report(report, evaluation) if report is not None else None
    failed = _failures(gates, summary)
    summary["failed"] = failed
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        typer.echo(text(evaluation))
        if report is not None and unwritten is None:
            typer.echo(f"report: {report}")
    if unwritten is not None:
        typer.echo(unwritten, err=True)
        raise typer.Exit(1)
    for line in failed:
        typer.echo(f"below --fail-under: {line}", err=True)
    if failed:
        raise typer.Exit(1)


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r{done}/{total} documents" + ("\n" if done == total else ""))
    sys.stderr.flush()


async def _evaluate(pipeline: Any, data: Any, concurrency: int, progress: Any, chunk_size: int | None) -> Any:
    from steadyflow.evals.runner import run_dataset

    try:
        if chunk_size is not None:
            from steadyflow.evals.on_prefect import run_dataset_on_prefect

            return await run_dataset_on_prefect(pipeline, data, concurrency, chunk_size)
        return await run_dataset(pipeline, data, concurrency, progress)
    finally:
        await pipeline.aclose()
