"""``steadyflow diff``: what changed between two pipeline versions (files, or versions recorded runs kept)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.spec.errors import SpecError


def _side(ref: str, folder: Path | None, overrides: list[str]) -> tuple[dict[str, Any], Path | None]:
    """A snapshot from a pipeline file (and its output folder), or from a run recorded in ``folder``."""
    from steadyflow.audit.ledger import read_ledger
    from steadyflow.audit.log import LOG_NAME
    from steadyflow.io.outputs import output_folder
    from steadyflow.spec.snapshot import snapshot
    from steadyflow.stages.checks import load_checked

    if Path(ref).is_file():
        try:
            loaded = load_checked(Path(ref), overrides)
        except SpecError as exc:
            _fail(exc)
        return snapshot(loaded), output_folder(loaded.spec, loaded.base_dir, None)
    if folder is None or not (folder / LOG_NAME).is_file():
        raise ValueError(f"{ref}: no such pipeline file, and no run folder to find a run in (give --output)")
    ledger = read_ledger(folder / LOG_NAME)
    if ledger is None:
        raise ValueError(f"{folder}: no run ledger")
    try:
        run_id = (ledger.run_ids(finished=True) or [ref])[0] if ref == "last" else ref
        kept = ledger.snapshot(run_id)
        if kept is None:
            known = ", ".join(ledger.run_ids()[:5]) or "none"
            what = "no such run" if ledger.run_info(run_id) is None else "kept no pipeline version (recorded earlier)"
            raise ValueError(f"{folder}: run {ref}: {what} (newest: {known})")
    finally:
        ledger.close()
    return kept, None


@app.command("diff")
def diff_command(
    old: Annotated[str, typer.Argument(help="a pipeline file, or a run id ('last') recorded in --output")],
    new: Annotated[str, typer.Argument(help="a pipeline file, or a run id ('last') recorded in --output")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the output folder whose runs the ids name")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the changes as one JSON object")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a value of the file(s)")] = None,
) -> None:
    """List what changed between two pipeline versions: prompts (a unified diff), models, ladders, checks, rules."""
    from steadyflow.audit.sqlite import StoreError
    from steadyflow.spec.diff import diff
    from steadyflow.spec.snapshot import snapshot_hash

    try:
        files = [ref for ref in (old, new) if Path(ref).is_file()]
        folder = output
        if folder is None and files:
            folder = _side(files[0], None, overrides or [])[1]
        before, _ = _side(old, folder, overrides or [])
        after, _ = _side(new, folder, overrides or [])
    except (ValueError, StoreError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    changes = diff(before, after)
    if as_json:
        sides = {"old": {"ref": old, "hash": snapshot_hash(before)}, "new": {"ref": new, "hash": snapshot_hash(after)}}
        sys.stdout.write(json.dumps({**sides, "changes": [c.as_dict() for c in changes]}) + "\n")
        return
    for change in changes:
        if change.unified:
            typer.echo(f"{change.section}: {change.where}: {change.old} -> {change.new}")
            typer.echo("  " + change.unified.rstrip("\n").replace("\n", "\n  "))
        else:
            typer.echo(f"{change.section}: {change.where}: {_shown(change.old)} -> {_shown(change.new)}")
    sections = sorted({c.section for c in changes})
    typer.echo(
        f"{len(changes)} change{'s' if len(changes) != 1 else ''} ({', '.join(sections)})"
        if changes
        else "no change that affects outputs"
    )


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."
