"""The ``steadyflow`` command.

Heavy imports (Prefect, instructor) happen inside the commands that need
them, so ``validate``, ``schema`` and ``--help`` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steadyflow.spec.errors import SpecError

if TYPE_CHECKING:
    from steadyflow.spec.loader import LoadedPipeline

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Declarative AI pipelines that keep working when the model does not.")

EXIT_INVALID = 2


def _fail(problems: SpecError) -> None:
    for problem in problems.problems:
        typer.echo(str(problem), err=True)
    raise typer.Exit(EXIT_INVALID)


def _load(file: Path, overrides: list[str]) -> LoadedPipeline:
    """Load a pipeline and check the plugin checks it names; raises SpecError with every problem."""
    from steadyflow.spec.loader import load_pipeline
    from steadyflow.stages.routing import route_problems
    from steadyflow.validators.plugins import plugin_problems

    pipeline = load_pipeline(file, overrides)
    problems = plugin_problems(pipeline) + route_problems(pipeline)
    if problems:
        raise SpecError(problems)
    return pipeline


def load_with_source(file: Path, overrides: list[str] | None, input: str | None) -> LoadedPipeline:
    """Load a pipeline for running; exit 2 with every problem, or when it has no source and no --input."""
    try:
        pipeline = _load(file, overrides or [])
    except SpecError as exc:
        _fail(exc)
    if input is None and pipeline.spec.source is None:
        typer.echo(f"{file}: the pipeline has no source; give --input PATH", err=True)
        raise typer.Exit(EXIT_INVALID)
    return pipeline


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="pipeline files")]) -> None:
    """Check pipeline files; print one line per problem (path:line:col) and exit 2 if any."""
    failed = False
    for file in files:
        try:
            _load(file, [])
        except SpecError as exc:
            failed = True
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
        else:
            typer.echo(f"{file}: ok")
    if failed:
        raise typer.Exit(EXIT_INVALID)


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editors: yaml-language-server)."""
    from steadyflow.spec.schema import pipeline_schema

    typer.echo(json.dumps(pipeline_schema(), indent=2))


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="pipeline file")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="folder, glob, .jsonl or .csv; replaces the pipeline's source")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="folder for outputs, quarantine and decision records")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=1024, help="requests in flight per model")] = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="documents per Prefect task")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a value: dotted.key=value (repeatable)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the output cache")] = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="RUN_ID", help="continue a stopped run ('last': the newest unfinished one); skip its completed documents"
    )] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar, only the summary")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary object (no progress bar)")] = False,
) -> None:
    """Run a pipeline over documents as a Prefect flow."""
    pipeline = load_with_source(file, set_, input)
    if input is not None and not Path(input).exists() and "*" not in input:
        typer.echo(f"--input {input}: no such file or folder", err=True)
        raise typer.Exit(EXIT_INVALID)
    _check_local_models(file, pipeline)

    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()
    from steadyflow.cli.progress import BarProgress
    from steadyflow.flows.batch import ResumeError, check_resume
    from steadyflow.flows.compiler import RunOptions, run_pipeline
    from steadyflow.io.sinks import SinkError
    from steadyflow.providers.local_model import LocalModelError

    options = RunOptions(input=input, output=output, concurrency=concurrency, chunk_size=chunk_size, no_cache=no_cache,
                         overrides=set_ or [])
    if resume is not None:
        options.run_id, options.resume = resume, True
    try:
        if options.resume:  # before anything starts; resolves --resume last
            check_resume(pipeline, options)
    except ResumeError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    bar = None if quiet or as_json else BarProgress(options.run_id)
    if bar is None:  # scripts need the run id to resume too; stdout stays the summary alone
        typer.echo(f"run {options.run_id}; resume after a crash with --resume {options.run_id}", err=True)
    options.progress = bar
    try:
        summary = run_pipeline(pipeline, options)
    except (ResumeError, SinkError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if bar is not None:
            bar.stop()
    _print_summary(summary.as_json(), as_json)


def _check_local_models(file: Path, pipeline: LoadedPipeline) -> None:
    """Fail before Prefect starts when a local model is missing or does not verify."""
    from steadyflow.providers.local_model import LocalModelError
    from steadyflow.providers.local_server import resolve_model

    try:
        for spec in pipeline.spec.models.values():
            if spec.provider == "local" and not spec.base_url:
                resolve_model(spec)
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None


def _print_summary(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    resumed = f" (+{data['resumed']} completed before the resume)" if data["resumed"] else ""
    typer.echo(f"run {data['run_id']}: {data['documents']} documents{resumed} -> {data['outputs']} outputs, "
               f"{data['quarantined']} quarantined, {data['review']} for review")
    for stage, counts in data["by_rung"].items():
        typer.echo(f"  {stage}: " + ", ".join(f"{rung} {n}" for rung, n in sorted(counts.items())))
    if data["checks"]:
        typer.echo("  checks failed: " + ", ".join(f"{name} {n}" for name, n in data["checks"].items()))
    typer.echo(f"  tokens {data['tokens']['total']}, cost ${data['cost_usd']:.6f}, {data['duration_s']:.1f}s")
    typer.echo(f"  outputs: {data['output_path']}\n  quarantine: {data['quarantine_path']}\n  decisions: {data['decisions_path']}")
    for note in data["notes"]:
        typer.echo(f"  note: {note}")


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="run id (default: the newest run in the store)")] = None,
    db: Annotated[Path, typer.Option(help="the run's decisions.sqlite")] = Path("out/decisions.sqlite"),
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """True cost of a run: tokens and USD by stage, model and rung, failed attempts and re-asks included."""
    from steadyflow.audit.report import run_cost
    from steadyflow.audit.store import DecisionStore

    if not db.is_file():
        typer.echo(f"--db {db}: no such file (a run prints where its decisions.sqlite is)", err=True)
        raise typer.Exit(EXIT_INVALID)
    store = DecisionStore(db)
    known = store.run_ids()
    run_id = run_id or (known[0] if known else None)
    if run_id not in known:
        typer.echo(f"{db}: no run '{run_id}' (runs: {', '.join(known[:5]) or 'none'})", err=True)
        raise typer.Exit(EXIT_INVALID)
    data = run_cost(store, run_id)
    store.close()
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    header = (f"{'stage':12} {'rung':>4} {'producer':28} {'calls':>6} {'failed':>6} {'reasks':>6} {'skipped':>7} {'accepted':>8} "
              f"{'tokens in':>10} {'tokens out':>10} {'USD':>10} {'USD failed':>10}")
    typer.echo(f"run {run_id}: {data['documents']} documents\n{header}")
    for line in data["lines"]:
        typer.echo(f"{line['stage']:12} {line['rung']:>4} {line['producer'][:28]:28} {line['attempts']:>6} {line['failed']:>6} "
                   f"{line['reasks']:>6} {line['skipped']:>7} {line['accepted']:>8} {line['tokens_in']:>10} {line['tokens_out']:>10} "
                   f"{line['usd']:>10.6f} {line['usd_failed']:>10.6f}")
    total = data["total"]
    typer.echo(f"total: ${total['usd']:.6f} (${total['usd_failed']:.6f} on failed or rejected attempts), "
               f"{total['tokens_in'] + total['tokens_out']} tokens, {total['reasks']} re-asks, "
               f"${total['usd_per_10k_documents']:.2f} per 10k documents")
    if total["usd_interrupted"] or total["tokens_interrupted"]:
        typer.echo(f"  of which ${total['usd_interrupted']:.6f} ({total['tokens_interrupted']} tokens) on attempts a crash interrupted "
                   "(their documents ran again after --resume; not in the lines above)")


def main() -> None:
    """Entry point of the ``steadyflow`` script."""
    from steadyflow.cli import schedule, tools  # noqa: F401  # register their commands

    app()
