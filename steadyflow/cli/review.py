"""``steadyflow review``: a person accepts or corrects what a run flagged; ``list`` and ``export`` around it."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.spec.errors import SpecError

if TYPE_CHECKING:
    from steadyflow.runner.review import Flagged
    from steadyflow.spec.loader import LoadedPipeline

ACTIONS = ("list", "export")
OutputOpt = Annotated[
    str | None, typer.Option("--output", "-o", help="the run's output folder (default: the pipeline's)")
]


def _open(file: Path, output: str | None) -> tuple[LoadedPipeline, Path]:
    from steadyflow.runner.review import folder_for
    from steadyflow.stages.checks import load_checked

    try:
        pipeline = load_checked(file, [], import_code=True)
    except SpecError as exc:
        _fail(exc)
    return pipeline, folder_for(pipeline, output)


def _flagged(pipeline: LoadedPipeline, folder: Path) -> list[Flagged]:
    from steadyflow.runner.review import ReviewError, flagged

    try:
        return flagged(pipeline, folder)
    except ReviewError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def review(
    first: Annotated[str, typer.Argument(metavar="[list|export] FILE", help="list, export, or the pipeline file")],
    second: Annotated[str | None, typer.Argument(metavar="", help="the pipeline file after list or export")] = None,
    output: OutputOpt = None,
    reviewer: Annotated[str | None, typer.Option(help="your name, as the record keeps it (default: the login)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="list: one JSON object per line")] = False,
    to: Annotated[Path | None, typer.Option("--to", help="export: the labelled dataset to write (.jsonl)")] = None,
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect", help="review in the Prefect UI instead: a flow run that pauses with a form per document"
        ),
    ] = False,
) -> None:
    """Accept or correct the outputs a run flagged for review, one by one.

    `review FILE` goes through them (accept, correct, skip, quit); `review list FILE` lists them;
    `review export FILE --to D.jsonl` writes the reviewed documents as a labelled dataset for `eval`.
    """
    action, file = (first, second) if first in ACTIONS else ("decide", first)
    if file is None:
        typer.echo(f"review {action}: give the pipeline file", err=True)
        raise typer.Exit(EXIT_INVALID)
    if action == "list":
        _list(Path(file), output, as_json)
    elif action == "export":
        if to is None:
            typer.echo("review export: give --to DATASET.jsonl", err=True)
            raise typer.Exit(EXIT_INVALID)
        _export(Path(file), to, output)
    elif prefect:
        _on_prefect(Path(file), output)
    else:
        _decide_all(Path(file), output, reviewer or getpass.getuser())


def _on_prefect(file: Path, output: str | None) -> None:
    import asyncio
    import os

    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("review --prefect: set PREFECT_API_URL to a Prefect server whose UI the reviewer opens", err=True)
        raise typer.Exit(EXIT_INVALID)
    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()
    from steadyflow.flows.review import review_on_prefect

    pipeline, folder = _open(file, output)
    items = _flagged(pipeline, folder)
    typer.echo(f"{len(items)} documents to review: open the paused flow run review-{pipeline.spec.pipeline} in the UI")
    decided = asyncio.run(review_on_prefect(pipeline, folder, items)) if items else 0
    typer.echo(f"{decided} decided; reviewed outputs are in {folder / 'reviewed.jsonl'}")


def _decide_all(file: Path, output: str | None, name: str) -> None:
    from steadyflow.runner.review import ReviewError, decide, document_text

    pipeline, folder = _open(file, output)
    items = _flagged(pipeline, folder)
    typer.echo(f"{len(items)} documents to review in {folder} (as {name})")
    done = 0
    for number, item in enumerate(items, 1):
        _show(item, number, len(items), document_text(item))
        choice = _ask("[a]ccept, [c]orrect, [s]kip, [q]uit", {"a", "c", "s", "q"})
        if choice == "q":
            break
        if choice == "s":
            continue
        corrected = _correct(pipeline, item) if choice == "c" else None
        try:
            action = decide(pipeline, folder, item, name, corrected)
        except ReviewError as exc:
            typer.echo(str(exc), err=True)
            continue
        done += 1
        typer.echo(f"  {action}")
    typer.echo(f"{done} decided; reviewed outputs are in {folder / 'reviewed.jsonl'}")


def _show(item: Flagged, number: int, total: int, text: str | None) -> None:
    from steadyflow.io.limits import printable

    typer.echo(f"\n[{number}/{total}] {printable(item.id)}  ({printable(item.source)})")
    for stage, output in item.outputs.items():
        rung = printable(str(item.rungs.get(stage, "?")))
        typer.echo(f"  {printable(stage)} (by {rung}): {printable(json.dumps(output, ensure_ascii=False))}")
    shown = "(the source can no longer be read)" if text is None else text[:1500]
    # a document's escape sequences would reach the reviewer's terminal (set its title, write its clipboard)
    lines = (printable(line.expandtabs(4)) for line in shown.splitlines()[:40])
    typer.echo("  ---\n" + "\n".join("  | " + line for line in lines) + "\n  ---")


def _ask(prompt: str, allowed: set[str]) -> str:
    while True:
        answer = typer.prompt(prompt, default="s", show_default=False).strip().lower()[:1]
        if answer in allowed:
            return answer


def _correct(pipeline: LoadedPipeline, item: Flagged) -> dict[str, dict[str, Any]]:
    """Ask for each field's value; Enter keeps it. Values are read as JSON when they parse, else as text."""
    from steadyflow.io.formats import json_or_text

    corrected: dict[str, dict[str, Any]] = {}
    schemas = {stage.id: stage.output_model.model_json_schema() for stage in pipeline.stages}
    for stage, output in item.outputs.items():
        corrected[stage] = dict(output)
        properties = schemas.get(stage, {}).get("properties", {})
        for name, value in output.items():
            choices = properties.get(name, {}).get("enum")
            hint = f" ({'/'.join(map(str, choices))})" if choices else ""
            answer = typer.prompt(f"  {stage}.{name}{hint}", default=json.dumps(value, ensure_ascii=False))
            corrected[stage][name] = json_or_text(answer)  # no NaN or Infinity: no JSON reader takes them back
    return corrected


def _list(file: Path, output: str | None, as_json: bool) -> None:
    pipeline, folder = _open(file, output)
    items = _flagged(pipeline, folder)
    for item in items:
        if as_json:
            sys.stdout.write(json.dumps({"id": item.id, "source": item.source, "rungs": item.rungs}) + "\n")
        else:
            from steadyflow.io.limits import printable

            rungs = ", ".join(f"{stage}: {rung}" for stage, rung in item.rungs.items())
            typer.echo(printable(f"{item.id}  {rungs}  {item.source}"))
    if not as_json:
        typer.echo(f"{len(items)} to review", err=True)


def _export(file: Path, to: Path, output: str | None) -> None:
    from steadyflow.runner.review import ReviewError, export

    pipeline, folder = _open(file, output)
    try:
        count = export(pipeline, folder, to)
    except ReviewError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(f"{to}: {count} reviewed documents")
