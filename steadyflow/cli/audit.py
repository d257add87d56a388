"""``steadyflow audit``: verify the tamper-evident trail, explain one decision, export a period, purge, make a key."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from steadyflow.cli import EXIT_INVALID, _fail, app
from steadyflow.spec.errors import SpecError

if TYPE_CHECKING:
    from steadyflow.audit.trail import AuditStore, PurgeResult

audit_app = typer.Typer(
    no_args_is_help=True,
    help="The audit trail every run writes: verify it, explain a decision, export a period, purge, make a signing key.",
)
app.add_typer(audit_app, name="audit")

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="SQLAlchemy URL of the audit store (default: the --pipeline's, else $STEADYFLOW_AUDIT_URL, "
        "else sqlite:///<user data>/steadyflow/audit.sqlite)",
    ),
]
PipelineOpt = Annotated[
    Path | None, typer.Option("--pipeline", "-p", help="use the audit store this pipeline file names")
]


def _say(message: str, code: int) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def _store(store: str | None, pipeline_file: Path | None, *, sign: bool = False) -> Iterator[AuditStore]:
    """The audit store named by ``--store``, the pipeline's ``audit.url``, or the default; exit 2 if there is none.

    ``sign``: the command writes (a purge), signed with ``$STEADYFLOW_AUDIT_SIGNING_KEY`` like a run's records.
    """
    from steadyflow.audit.chain import AuditError
    from steadyflow.runner.provenance import open_store

    given, base = store, Path.cwd()
    if pipeline_file is not None and store is None:
        from steadyflow.stages.checks import load_checked

        try:
            pipeline = load_checked(pipeline_file, [], import_code=False)
        except SpecError as exc:
            _fail(exc)
        given, base = pipeline.spec.audit.url, pipeline.base_dir
    try:
        opened = open_store(given, base, sign=sign, create=False)
    except AuditError as exc:
        _say(str(exc), EXIT_INVALID if str(exc).startswith("no audit store") else 1)
    try:
        yield opened
    except AuditError as exc:
        _say(str(exc), 1)
    finally:
        opened.close()


@audit_app.command("verify")
def verify_command(
    store: StoreOpt = None,
    pipeline_file: PipelineOpt = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="every record must be signed by one of these keys (PEM; repeatable)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as one JSON object")] = False,
) -> None:
    """Check the whole chain: each record's hash, each link, the head, purges and (with --public-key) signatures.

    Exit 0 when it holds, 1 at the first broken link (named), 2 when there is no store or a key is unreadable.
    """
    from dataclasses import asdict

    from steadyflow.audit.chain import AuditError, load_public_key

    keys = {}
    for path in public_key or []:
        try:
            key_id, key = load_public_key(path)
        except AuditError as exc:
            _say(str(exc), EXIT_INVALID)
        keys[key_id] = key
    with _store(store, pipeline_file) as opened:
        result = opened.verify(keys if public_key else None)
        shown = opened.shown
    if as_json:
        typer.echo(json.dumps({"store": shown, **asdict(result), "ok": result.ok}))
    elif result.ok:
        signed = f"; {result.signed} signed" + (" and verified" if public_key else " (give --public-key to check)")
        purged = f" after records 1 to {result.purged_through} were purged" if result.purged_through else ""
        typer.echo(
            f"{shown}: the chain holds: {result.records} records{purged}, head {result.head_seq} "
            f"{result.head_hash}{signed if result.signed or public_key else ''}"
        )
    else:
        typer.echo(f"{shown}: BROKEN at {result.broken}", err=True)
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("explain")
def explain_command(
    doc_id: Annotated[str, typer.Argument(help="the document's id, as the run's outputs name it")],
    run: Annotated[str | None, typer.Option("--run", help="the run (default: the newest run that decided it)")] = None,
    store: StoreOpt = None,
    pipeline_file: PipelineOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print what the trail holds as one JSON object")] = False,
) -> None:
    """How a document's output was produced: policy, actor, model and prompt, attempts, checks, rung, review, cost."""
    from steadyflow.audit.explain import explanation, render
    from steadyflow.io.limits import printable

    with _store(store, pipeline_file) as opened:
        found = explanation(opened, doc_id, run)
    typer.echo(json.dumps({"document": doc_id, **found}) if as_json else render(printable(doc_id), found))


def _when(value: str | None, option: str, *, end: bool) -> str:
    """An ISO date or date-time (UTC unless it says) as the store's time text; a date alone ``--to`` is inclusive."""
    if value is None:
        return "9999" if end else ""
    try:
        if len(value) == 10:
            day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            moment = day + dt.timedelta(days=1) if end else day
        else:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except ValueError:
        _say(f"{option} {value}: not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])", EXIT_INVALID)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # exact: no float on the way


@audit_app.command("export")
def export_command(
    since: Annotated[str | None, typer.Option("--from", help="first day (YYYY-MM-DD, UTC) or date-time")] = None,
    until: Annotated[str | None, typer.Option("--to", help="last day, included (YYYY-MM-DD) or date-time")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here (default: standard output)")] = None,
    store: StoreOpt = None,
    pipeline_file: PipelineOpt = None,
) -> None:
    """Every decision and review recorded in a period, one row each, with what record-keeping rules ask for."""
    from steadyflow.audit.export import write

    if fmt not in ("jsonl", "csv"):
        _say(f"--format {fmt}: use jsonl or csv", EXIT_INVALID)
    start, end = _when(since, "--from", end=False), _when(until, "--to", end=True)
    if start >= end:
        _say("--from is after --to", EXIT_INVALID)
    with _store(store, pipeline_file) as opened:
        if output is None:
            count = write(opened, start, end, fmt, sys.stdout)
        else:
            try:
                with output.open("w", encoding="utf-8", newline="") as handle:
                    count = write(opened, start, end, fmt, handle)
            except OSError as exc:
                _say(f"{output}: cannot write ({exc.strerror or type(exc).__name__})", 1)
    typer.echo(f"{count} records exported", err=True)


@audit_app.command("purge")
def purge_command(
    before: Annotated[
        str | None, typer.Option("--before", help="purge records older than this date (default: by retention)")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="who purges (default: $STEADYFLOW_ACTOR, else user@host)")
    ] = None,
    store: StoreOpt = None,
    pipeline_file: PipelineOpt = None,
) -> None:
    """Delete the oldest records (a prefix of the chain); the purge is recorded, and the chain still verifies."""
    from steadyflow.runner.provenance import actor as who
    from steadyflow.runner.provenance import check_actor

    if actor is not None and (problem := check_actor(actor)):
        _say(problem, EXIT_INVALID)
    name = who(actor)["name"]
    result: PurgeResult | None
    with _store(store, pipeline_file, sign=True) as opened:
        if before is not None:
            result = opened.purge(_when(before, "--before", end=False), name)
        else:
            result = opened.purge_expired(name)
            if result is None:
                _say("nothing purged: no retention applies to every pipeline here (give --before DATE)", 0)
    if result is None:
        return
    typer.echo(f"purged {result.removed} records (through record {result.through}) older than {result.cutoff}")


@audit_app.command("keygen")
def keygen_command(
    path: Annotated[Path, typer.Argument(help="where to write the private key (its public half goes to PATH.pub)")],
) -> None:
    """Make an Ed25519 key pair to sign the trail: set STEADYFLOW_AUDIT_SIGNING_KEY=PATH for runs."""
    from steadyflow.audit.chain import AuditError, generate_key

    try:
        key_id, public = generate_key(path)
    except AuditError as exc:
        _say(str(exc), 1)
    typer.echo(f"key {key_id}: private {path} (keep it secret), public {public} (for audit verify --public-key)")
