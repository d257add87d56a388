"""``steadyflow diff``: what changed between two pipeline versions (files, or versions recorded runs kept)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.spec.errors import SpecError

if TYPE_CHECKING:
    from steadyflow.spec.diff import Change

SECTIONS = ("pipeline", "model", "stage", "input", "prompt", "output", "ladder", "rules", "check", "other")
"""The order sections are shown in."""


def _file(path: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    """A pipeline file's snapshot and its output folder; a broken file exits 2 with its problems."""
    from steadyflow.io.outputs import output_folder
    from steadyflow.spec.snapshot import snapshot
    from steadyflow.stages.checks import load_checked

    try:
        loaded = load_checked(path, overrides)
    except SpecError as exc:
        _fail(exc)
    return snapshot(loaded), output_folder(loaded.spec, loaded.base_dir, None)


def _recorded(ref: str, folder: Path | None) -> dict[str, Any]:
    """The snapshot run ``ref`` (``last``: the newest finished run) of ``folder`` kept; ValueError if none."""
    from steadyflow.audit.ledger import read_ledger
    from steadyflow.audit.log import LOG_NAME

    if Path(ref).is_dir():
        raise ValueError(f"{ref}: a folder, not a pipeline file (to compare its runs: --output {ref} RUN_ID)")
    if Path(ref).suffix.lower() in (".yaml", ".yml", ".json"):
        raise ValueError(f"{ref}: no such pipeline file")
    if folder is None:
        raise ValueError(f"{ref}: no such pipeline file, and no run folder to find a run in (give --output)")
    ledger = read_ledger(folder / LOG_NAME) if (folder / LOG_NAME).is_file() else None
    if ledger is None:
        raise ValueError(f"{ref}: no such pipeline file, and {folder} has no recorded runs (give the run's --output)")
    try:
        run_id = (ledger.run_ids(finished=True) or [ref])[0] if ref == "last" else ref
        kept = ledger.snapshot(run_id)
        if kept is None:
            known = ", ".join(ledger.run_ids()[:5]) or "none"
            what = "no such run" if ledger.run_info(run_id) is None else "kept no pipeline version (recorded earlier)"
            raise ValueError(f"{folder}: run {ref}: {what} (newest: {known})")
    finally:
        ledger.close()
    return kept


def _sides(refs: tuple[str, str], output: Path | None, overrides: list[str]) -> list[dict[str, Any]]:
    """Both snapshots: files loaded (each once), run ids read from --output or the first file's output folder."""
    files = {ref: _file(Path(ref), overrides) for ref in refs if Path(ref).is_file()}
    folder = output if output is not None else next((where for _, where in files.values()), None)
    return [files[ref][0] if ref in files else _recorded(ref, folder) for ref in refs]


@app.command("diff")
def diff_command(
    old: Annotated[str, typer.Argument(help="a pipeline file, or a run id ('last') recorded in --output")],
    new: Annotated[str, typer.Argument(help="a pipeline file, or a run id ('last') recorded in --output")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="the output folder whose runs the ids name (default: the file's)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the changes as one JSON object")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a value of the file(s)")] = None,
) -> None:
    """List what changed between two pipeline versions: prompts (a unified diff), models, ladders, checks, rules.

    Informational: exits 0 whatever changed; 2 for a broken pipeline file or an unknown run.
    """
    from steadyflow.audit.sqlite import StoreError
    from steadyflow.spec.diff import diff
    from steadyflow.spec.snapshot import snapshot_hash

    try:
        before, after = _sides((old, new), output, overrides or [])
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except StoreError as exc:  # a ledger that cannot be read: not the user's arguments
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    changes = diff(before, after)
    if as_json:
        sides = {"old": {"ref": old, "hash": snapshot_hash(before)}, "new": {"ref": new, "hash": snapshot_hash(after)}}
        sys.stdout.write(json.dumps({**sides, "changes": [c.as_dict() for c in changes]}) + "\n")
        return
    _print(changes)


def _print(changes: list[Change]) -> None:
    """Changes grouped by section; prompts as unified diffs; a last line that counts them."""
    shown = [section for section in SECTIONS if any(c.section == section for c in changes)]
    shown += sorted({c.section for c in changes} - set(SECTIONS))
    for section in shown:
        typer.echo(f"{section}:")
        for change in (c for c in changes if c.section == section):
            if change.unified:
                typer.echo(f"  {change.where}: {change.old or '(none)'} -> {change.new or '(none)'}")
                typer.echo("    " + change.unified.rstrip("\n").replace("\n", "\n    "))
            else:
                typer.echo(f"  {change.where}: {_what(change.old, change.new)}")
    typer.echo(
        f"{len(changes)} change{'s' if len(changes) != 1 else ''} ({', '.join(shown)})"
        if changes
        else "no change that affects outputs"
    )


def _what(old: Any, new: Any) -> str:
    """``old -> new``; ``added``/``removed``; for two lists of plain values, which values came and went."""
    if old is None:
        return f"added {_shown(new)}"
    if new is None:
        return f"removed (was {_shown(old)})"
    plain = [isinstance(v, list) and all(not isinstance(x, dict | list) for x in v) for v in (old, new)]
    if all(plain):
        came = [_shown(x) for x in new if x not in old]
        went = [_shown(x) for x in old if x not in new]
        parts = ([f"added {', '.join(came)}"] if came else []) + ([f"removed {', '.join(went)}"] if went else [])
        return "; ".join(parts) or f"reordered {_shown(old)} -> {_shown(new)}"
    return f"{_shown(old)} -> {_shown(new)}"


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "kind" in value:  # a whole stage
        return f"a {value['kind']} stage"
    if isinstance(value, dict) and "provider" in value:  # a whole model
        return f"a model ({value['provider']}{' ' + value['model'] if value.get('model') else ''})"
    if isinstance(value, dict):  # a rung or a check: what is set
        value = {key: item for key, item in value.items() if item is not None}
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."
