"""``steadyflow replay``: what a candidate pipeline would have made of a recorded run; a gate for CI."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.cli.evaluate import _check_report_path, _progress
from steadyflow.spec.errors import SpecError


def _write(report: Path, data: dict[str, Any]) -> str | None:
    from steadyflow.core.markdown import page
    from steadyflow.replay.report import markdown

    try:
        text = markdown(data)
        report.write_text(page(text, "replay") if report.suffix.lower() in (".html", ".htm") else text, "utf-8")
    except OSError as exc:
        return f"{report}: cannot write the report ({exc.strerror or type(exc).__name__})"
    return None


@app.command("replay")
def replay_command(
    run_id: Annotated[str, typer.Argument(help="the recorded run ('last': the newest finished run of the folder)")],
    pipeline_file: Annotated[
        Path | None, typer.Option("--pipeline", "-p", help="the candidate pipeline file (with --shadow: optional)")
    ] = None,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="compare with what the run's --shadow candidate made; no model call")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the run's output folder (default: the candidate's)")
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="replay this many of the run's documents")] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", "-d", help="labels to score both against (default: reviewed outputs)")
    ] = None,
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="KIND[:FIELD]=LIMIT: exit 1 above it; changed:FIELD, accuracy_drop:FIELD, quarantined, cost, "
            "cost_increase, latency, latency_increase, inputs",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the report here (.md or .html)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the replay as one JSON object")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="documents in flight")] = 8,
    prefect: Annotated[
        bool, typer.Option("--prefect", help="run as a Prefect flow and publish the report as an artifact")
    ] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a value of the candidate")] = None,
) -> None:
    """Replay a recorded run's documents through a candidate pipeline and compare, field by field.

    Inputs are read again from the run's source and checked against their recorded hashes (changed or
    missing ones are listed, never used). Prints per field what changed, rung changes, new quarantines,
    cost, tokens and latency both ways, and the accuracy of both against labels or reviews.
    """
    from steadyflow.audit.sqlite import StoreError
    from steadyflow.replay.gates import failures, parse_gates
    from steadyflow.replay.recorded import ReplayError, open_recorded

    if pipeline_file is None and not shadow:
        typer.echo("replay needs --pipeline candidate.yaml (or --shadow, for a run made with --shadow)", err=True)
        raise typer.Exit(EXIT_INVALID)
    pipeline = _candidate(pipeline_file, overrides or [])
    if output is None and pipeline is None:
        typer.echo("replay --shadow without --pipeline needs the run's --output folder", err=True)
        raise typer.Exit(EXIT_INVALID)
    folder = output if output is not None else _folder_of(pipeline)
    try:
        gates = parse_gates(fail_on or [])
        if report is not None:
            _check_report_path(report)
        recorded = open_recorded(folder, run_id)
    except (ValueError, ReplayError, StoreError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        options = (sample, dataset, concurrency, prefect, shadow, as_json)
        result = _run(recorded, pipeline, pipeline_file, options)
    finally:
        recorded.close()
    data = result.as_dict()
    data["failed"] = failures(gates, data) if data["documents"] else ["no document could be replayed"]
    unwritten = _write(report, data) if report is not None else None
    _show(data, as_json, report if unwritten is None else None)
    if unwritten is not None:
        typer.echo(unwritten, err=True)
    for line in data["failed"]:
        typer.echo(f"replay failed: {line}", err=True)
    if data["failed"] or unwritten is not None:
        raise typer.Exit(1)


def _candidate(path: Path | None, overrides: list[str]) -> Any:
    """The candidate as a :class:`steadyflow.api.Pipeline`, or None; a broken file exits 2 with its problems."""
    from steadyflow.api import Pipeline
    from steadyflow.stages.checks import load_checked

    if path is None:
        return None
    try:
        return Pipeline(load_checked(path, overrides), overrides, check_workers=None)  # as `run` does
    except SpecError as exc:
        _fail(exc)
    raise AssertionError("unreachable")  # _fail exits


def _folder_of(pipeline: Any) -> Path:
    from steadyflow.io.outputs import output_folder

    return output_folder(pipeline.loaded.spec, pipeline.loaded.base_dir, None)


def _run(recorded: Any, pipeline: Any, file: Path | None, options: tuple[Any, ...]) -> Any:
    """Replay (or read the shadow); the one-line errors exit 2 (bad input) or 1 (the model could not start)."""
    from steadyflow.evals.dataset import DatasetError
    from steadyflow.evals.scorers import ScorerError
    from steadyflow.providers.local_model import LocalModelError
    from steadyflow.replay.recorded import ReplayError
    from steadyflow.replay.runner import labels_of, replay_shadow

    sample, dataset, concurrency, prefect, shadow, as_json = options
    try:
        if shadow:
            return replay_shadow(recorded, pipeline, dataset)
        recorded.source()  # a run that kept no source is told before any model starts
        labels_of(pipeline, recorded, dataset)
        progress = _progress if sys.stderr.isatty() and not as_json else None
        return asyncio.run(_replay(recorded, pipeline, sample, dataset, concurrency, progress, prefect))
    except (ReplayError, DatasetError, ScorerError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None


def _show(data: dict[str, Any], as_json: bool, report: Path | None) -> None:
    from steadyflow.replay.report import text

    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    typer.echo(text(data))
    if report is not None:
        typer.echo(f"report: {report}")


async def _replay(
    recorded: Any,
    pipeline: Any,
    sample: int | None,
    dataset: Path | None,
    concurrency: int,
    progress: Any,
    prefect: bool,
) -> Any:
    from steadyflow.replay.runner import replay_run

    try:
        if prefect:
            from steadyflow.replay.on_prefect import replay_on_prefect

            return await replay_on_prefect(recorded, pipeline, sample, dataset, concurrency)
        return await replay_run(recorded, pipeline, sample, dataset, concurrency, progress)
    finally:
        await pipeline.aclose()


@app.command("prompt")
def prompt_command(
    version: Annotated[str, typer.Argument(help="a prompt version (the hash decision records name; 4+ digits)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the output folder whose runs kept it")],
) -> None:
    """Show a prompt as a recorded run sent it: its system and template text, kept by version."""
    from steadyflow.audit.ledger import read_ledger
    from steadyflow.audit.log import LOG_NAME
    from steadyflow.audit.sqlite import StoreError

    try:
        ledger = read_ledger(output / LOG_NAME) if (output / LOG_NAME).is_file() else None
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if ledger is None:
        typer.echo(f"{output}: no runs recorded here (give the --output folder of a run)", err=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        kept = ledger.prompt(version)
    finally:
        ledger.close()
    if kept is None:
        typer.echo(f"{output}: no single prompt {version} kept (give 4 or more digits of a version)", err=True)
        raise typer.Exit(EXIT_INVALID)
    typer.echo(f"prompt {kept['version']}\n--- system\n{kept['system']}\n--- template\n{kept['template']}")
