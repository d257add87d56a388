"""The ``steadyflow`` command.

Heavy imports (Prefect, instructor) happen inside the commands that need
them, so ``validate``, ``schema`` and ``--help`` start fast.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from steadyflow.audit.chain import AuditError
from steadyflow.audit.sqlite import StoreError
from steadyflow.spec.errors import SpecError, error_line

if TYPE_CHECKING:
    from steadyflow.audit.ledger import RunLedger
    from steadyflow.audit.log import DecisionLog
    from steadyflow.spec.loader import LoadedPipeline

# no rich tracebacks: they print local variables, and a local variable can hold a document (see main())
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Declarative AI pipelines that keep working when the model does not.",
)

EXIT_INVALID = 2


def _fail(problems: SpecError) -> None:
    for problem in problems.problems:
        typer.echo(str(problem), err=True)
    raise typer.Exit(EXIT_INVALID)


def _load(file: Path, overrides: list[str], *, import_code: bool = True) -> LoadedPipeline:
    """Load a pipeline and check the plugin checks it names; raises SpecError with every problem.

    ``import_code=False`` imports none of the pipeline's code (plugins, output_model): plugin checks go unverified.
    """
    from steadyflow.stages.checks import load_checked

    return load_checked(file, overrides, import_code=import_code)


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
def validate(
    files: Annotated[list[Path], typer.Argument(help="pipeline files")],
    plugins: Annotated[
        bool | None,
        typer.Option(
            "--plugins/--no-plugins",
            help="import the pipeline's plugin modules and output_model classes to check them (they are code and run). "
            "Default: --plugins, or --no-plugins when the CI environment variable is set; an explicit option wins.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check pipeline files; print one line per problem (path:line:col) and exit 2 if any."""
    import os

    from steadyflow.validators.plugins import names_code

    import_code = plugins if plugins is not None else not os.environ.get("CI")
    failed = unverified = False
    for file in files:
        try:
            pipeline = _load(file, [], import_code=import_code)
        except SpecError as exc:
            failed = True
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
        else:
            unverified = unverified or (not import_code and names_code(pipeline))
            typer.echo(f"{file}: ok")
    if unverified:
        reason = "--no-plugins" if plugins is not None else "CI is set"
        typer.echo(
            "note: plugin checks, stage kinds and output_model classes were not imported or verified "
            f"({reason}; --plugins imports them)",
            err=True,
        )
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
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="folder, glob, .jsonl or .csv; replaces the pipeline's source")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="folder for outputs, quarantine and decision records")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=1024, help="requests in flight per model")] = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="documents per Prefect task")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a value: dotted.key=value (repeatable)")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the output cache")] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="continue a stopped run ('last': the newest unfinished one); skip its completed documents",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="replace sink files of an unfinished run, or not written by any run in the output folder",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar, only the summary")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary object (no progress bar)")] = False,
    shadow: Annotated[
        Path | None,
        typer.Option(
            help="a candidate pipeline run beside production on a share of documents; only production's "
            "outputs reach the sink (compare with: steadyflow replay RUN_ID --shadow)"
        ),
    ] = None,
    shadow_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="the share of documents the --shadow candidate also runs")
    ] = 0.1,
    actor: Annotated[
        str | None,
        typer.Option(help="who runs it, as the audit trail keeps it (default: $STEADYFLOW_ACTOR, else user@host)"),
    ] = None,
) -> None:
    """Run a pipeline over documents as a Prefect flow."""
    pipeline = load_with_source(file, set_, input)
    _check_actor(actor)
    _check_shadow(shadow)
    if input is not None and not Path(input).exists() and "*" not in input:
        typer.echo(f"--input {input}: no such file or folder", err=True)
        raise typer.Exit(EXIT_INVALID)
    _check_local_models(file, pipeline)

    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()
    if (
        quiet or as_json
    ):  # Prefect's INFO lines are progress too; warnings and errors still show (a user's setting wins)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from steadyflow.cli.progress import BarProgress
    from steadyflow.flows.compiler import run_pipeline
    from steadyflow.io.lock import LockedError
    from steadyflow.io.sinks import SinkError
    from steadyflow.providers.local_model import LocalModelError
    from steadyflow.runner.run import ResumeError, RunOptions, check_outputs, check_resume

    options = RunOptions(
        input=input,
        output=output,
        concurrency=concurrency,
        chunk_size=chunk_size,
        no_cache=no_cache,
        overrides=set_ or [],
        overwrite=overwrite,
        shadow=shadow,
        shadow_share=shadow_share,
        actor=actor,
    )
    if resume is not None:
        options.run_id, options.resume = resume, True
    try:
        if options.resume:  # before anything starts; resolves --resume last
            check_resume(pipeline, options)
        check_outputs(pipeline, options)  # a busy folder or a sink of another run is told at once, not after start-up
    except (ResumeError, LockedError, SinkError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    _check_audit(file, pipeline)
    bar = None if quiet or as_json else BarProgress(options.run_id)
    if bar is None:  # scripts need the run id to resume too; stdout stays the summary alone
        typer.echo(f"run {options.run_id}; resume after a crash with --resume {options.run_id}", err=True)
    options.progress = bar
    try:
        summary = run_pipeline(pipeline, options)
    except (ResumeError, SinkError, LockedError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    except SpecError as exc:  # a Dask worker found the pipeline file changed since the run started
        _fail(exc)
    except (OSError, StoreError, AuditError) as exc:  # disk full, read-only folder: what was completed is safe
        then = (
            f"completed documents are kept: fix it, then steadyflow run {file} --resume {options.run_id}"
            if _registered(pipeline, options)
            else "nothing was written: fix it and run again"
        )
        typer.echo(f"{file}: {error_line(exc)}; {then}", err=True)
        raise typer.Exit(1) from None
    finally:
        if bar is not None:
            bar.stop()
    _print_summary(summary.as_json(), as_json)


def _check_audit(file: Path, pipeline: LoadedPipeline) -> None:
    """An audit store that cannot be opened (server down, bad URL, unset ${NAME}) is told now, before start-up."""
    if not pipeline.spec.audit.enabled:
        return
    from steadyflow.runner.provenance import open_store

    try:
        open_store(pipeline.spec.audit.url, pipeline.base_dir).close()
    except AuditError as exc:
        typer.echo(f"{file}: {exc}; nothing was run", err=True)
        raise typer.Exit(1) from None


def _check_actor(actor: str | None) -> None:
    """A --actor that names no one (empty, control characters, too long) is refused (exit 2)."""
    from steadyflow.runner.provenance import check_actor

    if actor is not None and (problem := check_actor(actor)):
        typer.echo(problem, err=True)
        raise typer.Exit(EXIT_INVALID)


def _check_shadow(shadow: Path | None) -> None:
    """A broken --shadow candidate is told now, with its problems (exit 2), before production starts."""
    if shadow is None:
        return
    try:
        _load(shadow, [])
    except SpecError as exc:
        _fail(exc)


def _registered(pipeline: LoadedPipeline, options: Any) -> bool:
    """Whether the run got as far as its run ledger (only then can it be resumed); reads, never migrates."""
    from steadyflow.audit.ledger import read_ledger
    from steadyflow.runner.run import folder_of

    try:
        ledger = read_ledger(folder_of(pipeline, options) / "decisions.sqlite")
    except StoreError:
        return False
    if ledger is None:
        return False
    try:
        return ledger.run_info(options.run_id) is not None
    finally:
        ledger.close()


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
    typer.echo(
        f"run {data['run_id']}: {data['documents']} documents{resumed} -> {data['outputs']} outputs, "
        f"{data['quarantined']} quarantined, {data['review']} for review"
    )
    for stage, counts in data["by_rung"].items():
        typer.echo(f"  {stage}: " + ", ".join(f"{rung} {n}" for rung, n in sorted(counts.items())))
        _print_reasons(data.get("fallback_reasons", {}).get(stage, {}))
    latency, queue = data.get("latency_ms") or {}, data.get("queue_ms") or {}
    if latency.get("p50") is not None:
        typer.echo(
            f"  latency per document p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])} "
            f"(own time; waiting for a slot: p50 {_ms(queue.get('p50'))}, p95 {_ms(queue.get('p95'))})"
        )
    if data["checks"]:
        typer.echo("  checks failed: " + ", ".join(f"{name} {n}" for name, n in data["checks"].items()))
    typer.echo(f"  tokens {data['tokens']['total']}, cost ${data['cost_usd']:.6f}, {data['duration_s']:.1f}s")
    typer.echo(
        f"  outputs: {data['output_path']}\n"
        f"  quarantine: {data['quarantine_path']}\n"
        f"  decisions: {data['decisions_path']}"
    )
    if data.get("audit"):  # where the trail is, and the head to keep elsewhere
        audit = data["audit"]
        typer.echo(f"  audit trail: {audit['store']} (head {audit['head_seq']} {audit['head_hash'][:16]})")
    for note in data["notes"]:
        typer.echo(f"  note: {note}")


def _print_reasons(by_ended: dict[str, dict[str, dict[str, int]]], indent: str = "    ") -> None:
    """Why documents fell down the ladder, one line per rung they ended on (see steadyflow.audit.reasons)."""
    from steadyflow.audit.reasons import one_line

    for ended, by_source in by_ended.items():
        typer.echo(f"{indent}{ended} <- {one_line(by_source)}")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"


def read_stores(db: Path) -> tuple[DecisionLog, RunLedger | None]:
    """A folder's decision log and run ledger, opened to read only; a missing or foreign file exits 2 with one line.

    A reader never writes (nor migrates a folder from before runs.sqlite), whatever database it is given.
    """
    from steadyflow.audit.ledger import read_ledger
    from steadyflow.audit.log import DecisionLog

    if not db.is_file():
        typer.echo(f"--db {db}: no such file (a run prints where its decisions.sqlite is)", err=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        return DecisionLog(db, readonly=True), read_ledger(db)
    except StoreError as exc:
        typer.echo(f"--db {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="run id (default: the newest run in the store)")] = None,
    db: Annotated[
        Path, typer.Option(help="the run's decisions.sqlite (its runs.sqlite is read from the same folder)")
    ] = Path("out/decisions.sqlite"),
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """True cost of a run: tokens and USD by stage, model and rung, failed attempts and re-asks included."""
    from steadyflow.audit.report import run_cost

    log, ledger = read_stores(db)
    known = ledger.run_ids() if ledger is not None else []
    run_id = run_id or (known[0] if known else None)
    if ledger is None or run_id not in known:
        typer.echo(f"{db}: no run '{run_id}' (runs: {', '.join(known[:5]) or 'none'})", err=True)
        raise typer.Exit(EXIT_INVALID)
    data = run_cost(log, ledger, run_id)
    log.close()
    ledger.close()
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    header = (
        f"{'stage':12} {'rung':>4} {'producer':28} {'calls':>6} {'failed':>6} {'reasks':>6} {'skipped':>7} "
        f"{'accepted':>8} {'tokens in':>10} {'tokens out':>10} {'USD':>10} {'USD failed':>10}"
    )
    typer.echo(f"run {run_id}: {data['documents']} documents\n{header}")
    for line in data["lines"]:
        typer.echo(
            f"{line['stage']:12} {line['rung']:>4} {line['producer'][:28]:28} {line['attempts']:>6} "
            f"{line['failed']:>6} {line['reasks']:>6} {line['skipped']:>7} {line['accepted']:>8} "
            f"{line['tokens_in']:>10} {line['tokens_out']:>10} {line['usd']:>10.6f} {line['usd_failed']:>10.6f}"
        )
    total = data["total"]
    typer.echo(
        f"total: ${total['usd']:.6f} (${total['usd_failed']:.6f} on failed or rejected attempts), "
        f"{total['tokens_in'] + total['tokens_out']} tokens, {total['reasks']} re-asks, "
        f"${total['usd_per_10k_documents']:.2f} per 10k documents"
    )
    if total["usd_interrupted"] or total["tokens_interrupted"]:
        typer.echo(
            f"  of which ${total['usd_interrupted']:.6f} ({total['tokens_interrupted']} tokens) "
            "on attempts a crash interrupted "
            "(their documents ran again after --resume; not in the lines above)"
        )
    for stage, found in data["routing"].items():
        hedges = found["hedges"]
        typer.echo(
            f"routing of {stage}: hedges fired {hedges['fired']}, won {hedges['won']}, cost ${hedges['usd']:.6f}; "
            "entries (documents per reason -> model):"
        )
        for entry, count in found["entries"].items():
            typer.echo(f"  {count:>6}  {entry}")
    if data["fallback_reasons"]:
        typer.echo("why documents fell down the ladder (documents per reason):")
        for stage, by_ended in data["fallback_reasons"].items():
            typer.echo(f"  {stage}:")
            _print_reasons(by_ended)


def main() -> None:
    """Entry point of the ``steadyflow`` script: one line per error, never a traceback.

    A traceback prints frames, and frames can hold document text (in messages or, with
    rich tracebacks, local variables): so an unexpected error is reported by its type and
    the place it happened only.
    """
    from steadyflow.cli import audit, changes, drift, evaluate, replay, review, schedule, tools, trial  # noqa: F401  # register their commands

    try:
        code = app(standalone_mode=False)  # click returns a command's exit code here instead of exiting
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("steadyflow: interrupted", err=True)
        sys.exit(130)
    except (OSError, StoreError) as exc:
        typer.echo(f"steadyflow: {error_line(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        place = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        typer.echo(
            f"steadyflow: internal error: {type(exc).__name__}{place} (please report it; no details are printed "
            "because they could contain document text)",
            err=True,
        )
        sys.exit(1)
    finally:
        # the command is done: spare the interpreter's last garbage collection at exit, which walks every
        # object of what a run loaded (spaCy, ONNX, Prefect): 1.4 s of a 3-document run on 2 cores
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
