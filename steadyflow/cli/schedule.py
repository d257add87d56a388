"""``steadyflow serve`` and ``steadyflow deploy``: pipelines on a schedule, on Prefect's own machinery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steadyflow.cli import EXIT_INVALID, app, load_with_source

Cron = Annotated[str | None, typer.Option("--cron", help='cron schedule, e.g. "0 2 * * *" (02:00 every day)')]
Interval = Annotated[
    float | None, typer.Option("--interval", min=1, help="run every N seconds instead of a cron schedule")
]
Input = Annotated[
    str | None, typer.Option("--input", "-i", help="folder, glob, .jsonl or .csv; replaces the pipeline's source")
]
Output = Annotated[
    str | None, typer.Option("--output", "-o", help="folder for outputs, quarantine and decision records")
]
Sets = Annotated[list[str] | None, typer.Option("--set", help="override a value: dotted.key=value (repeatable)")]


def _parameters(
    file: Path, input: str | None, output: str | None, set_: list[str] | None, cron: str | None
) -> tuple[str, dict[str, object]]:
    pipeline = load_with_source(file, set_, input)
    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()
    if cron is not None:
        from steadyflow.flows.deploy import cron_is_valid

        if not cron_is_valid(cron):
            typer.echo(f'--cron "{cron}": not a cron expression (five fields: minute hour day month weekday)', err=True)
            raise typer.Exit(EXIT_INVALID) from None
    from steadyflow.flows.deploy import run_parameters

    return pipeline.spec.pipeline, run_parameters(file, input, output, set_ or [])


@app.command()
def serve(
    file: Annotated[Path, typer.Argument(help="pipeline file")],
    cron: Cron = None,
    interval: Interval = None,
    input: Input = None,
    output: Output = None,
    set_: Sets = None,
) -> None:
    """Serve a pipeline: run it on a schedule (and from the Prefect UI's "Run" button) until stopped with Ctrl-C."""
    name, parameters = _parameters(file, input, output, set_, cron)
    from steadyflow.flows.deploy import serve as serve_flow

    typer.echo(
        f"serving deployment steadyflow/{name}" + (f' on "{cron}"' if cron else "") + "; stop with Ctrl-C", err=True
    )
    serve_flow(name, parameters, cron, interval)


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="pipeline file")],
    pool: Annotated[str, typer.Option("--pool", help="Prefect work pool (a process pool is created if missing)")],
    cron: Cron = None,
    interval: Interval = None,
    input: Input = None,
    output: Output = None,
    set_: Sets = None,
) -> None:
    """Create a Prefect deployment of a pipeline for a work pool.

    Start workers with `prefect worker start --pool NAME`.
    """
    name, parameters = _parameters(file, input, output, set_, cron)
    from steadyflow.flows.deploy import deploy as deploy_flow

    deployment_id = deploy_flow(name, parameters, pool, cron, interval)
    typer.echo(f"deployment steadyflow/{name} ({deployment_id}) on work pool '{pool}'")
    typer.echo(f"  start a worker: prefect worker start --pool {pool}")
    typer.echo(f"  run it now:     prefect deployment run steadyflow/{name}")
