"""The ``steadyflow`` command.

Heavy imports (Prefect, instructor) happen inside the commands that need
them, so ``validate``, ``schema`` and ``--help`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from steadyflow.spec.errors import SpecError

if TYPE_CHECKING:
    from steadyflow.spec.loader import LoadedPipeline

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Declarative AI pipelines that keep working when the model does not.")
chaos_app = typer.Typer(no_args_is_help=True, help="A fault-injecting OpenAI-compatible endpoint for testing degradation.")
app.add_typer(chaos_app, name="chaos")
local_app = typer.Typer(no_args_is_help=True, help="The embedded local model: where it is, and a server that runs can share.")
app.add_typer(local_app, name="local-model")

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
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary object")] = False,
) -> None:
    """Run a pipeline over documents as a Prefect flow."""
    try:
        pipeline = _load(file, set_ or [])
    except SpecError as exc:
        _fail(exc)
    if input is None and pipeline.spec.source is None:
        typer.echo(f"{file}: the pipeline has no source; give --input PATH", err=True)
        raise typer.Exit(EXIT_INVALID)
    if input is not None and not Path(input).exists() and "*" not in input:
        typer.echo(f"--input {input}: no such file or folder", err=True)
        raise typer.Exit(EXIT_INVALID)

    from steadyflow.providers.local_model import LocalModelError
    from steadyflow.providers.local_server import resolve_model

    try:  # fail before Prefect starts when a local model is missing or does not verify
        for spec in pipeline.spec.models.values():
            if spec.provider == "local" and not spec.base_url:
                resolve_model(spec)
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None

    from steadyflow.flows.settings import prefect_defaults

    prefect_defaults()
    from steadyflow.flows.compiler import RunOptions, run_pipeline

    try:
        summary = run_pipeline(pipeline, RunOptions(input=input, output=output, concurrency=concurrency, chunk_size=chunk_size, no_cache=no_cache))
    except LocalModelError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    data = summary.as_json()
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    typer.echo(f"run {data['run_id']}: {data['documents']} documents -> {data['outputs']} outputs, "
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


@local_app.command("info")
def local_info(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Where the default model file is, its size and SHA-256, and whether a served server runs."""
    from steadyflow.providers.local_model import DEFAULT_MODEL, file_sha256, model_file
    from steadyflow.providers.local_server import served

    path = model_file()
    sha = file_sha256(path) if path.is_file() else None
    server = served()
    info = {
        "model": DEFAULT_MODEL.name, "origin": DEFAULT_MODEL.origin, "licence": DEFAULT_MODEL.licence,
        "path": str(path), "present": path.is_file(), "size": path.stat().st_size if path.is_file() else None,
        "sha256": sha, "pinned_sha256": DEFAULT_MODEL.sha256, "verified": sha == DEFAULT_MODEL.sha256,
        "server": None if server is None else {"pid": server.pid, "base_url": server.base_url, "model_path": server.model_path},
    }
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    for key, value in info.items():
        if key != "server":
            typer.echo(f"{key}: {value}")
    typer.echo(f"server: {server.base_url} (pid {server.pid}, {server.model_path})" if server else "server: none running")


@local_app.command("serve")
def local_serve(
    model_path: Annotated[Path | None, typer.Option(help="a GGUF file instead of the default model")] = None,
    context_tokens: Annotated[int, typer.Option(min=256, help="context window")] = 4096,
    port: Annotated[int | None, typer.Option(help="loopback port (default: a free one)")] = None,
) -> None:
    """Start a local model server in the background; `run` uses it instead of starting its own."""
    from steadyflow.providers.local_model import LocalModelError, check_gguf, default_model
    from steadyflow.providers.local_server import serve

    try:
        path = check_gguf(model_path.expanduser()).resolve() if model_path else default_model()[0]
        info = serve(path, context_tokens, port)
    except LocalModelError as exc:
        typer.echo(f"local-model serve: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"serving {info.model_path} at {info.base_url} (pid {info.pid}); stop it with: steadyflow local-model stop")


@local_app.command("stop")
def local_stop() -> None:
    """Stop the server that `local-model serve` started."""
    from steadyflow.providers.local_server import stop_served

    info = stop_served()
    typer.echo(f"stopped the server at {info.base_url} (pid {info.pid})" if info else "no local model server was running")


@chaos_app.command("serve")
def chaos_serve(
    host: Annotated[str, typer.Option(help="loopback address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 8765,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="KIND=RATE, e.g. 429=0.1 timeout=0.02 (repeatable)")] = None,
    latency_ms: Annotated[float, typer.Option(help="added to every completion")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of fault and answer choices")] = 0,
    hang_s: Annotated[float, typer.Option(help="how long a 'timeout' fault hangs")] = 120.0,
    script: Annotated[Path | None, typer.Option(help="JSONL of scripted answers served first, in order")] = None,
) -> None:
    """Serve chat completions on loopback with injected faults."""
    import asyncio

    from steadyflow.chaos.server import FAULTS, ChaosConfig, ChaosServer

    rates: dict[str, float] = {}
    for item in fault or []:
        kind, _, rate = item.partition("=")
        try:
            rates[kind] = float(rate)
        except ValueError:
            typer.echo(f"--fault {item}: expected KIND=RATE with KIND one of {', '.join(FAULTS)}", err=True)
            raise typer.Exit(EXIT_INVALID) from None
    try:
        config = ChaosConfig(faults=rates, latency_ms=latency_ms, seed=seed, hang_s=hang_s)
    except ValueError as exc:
        typer.echo(f"--fault: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    server = ChaosServer(config, host=host, port=port)
    if script is not None:
        server.script.extend(json.loads(line) for line in script.read_text().splitlines() if line.strip())

    async def serve() -> None:
        await server.start_async()
        typer.echo(f"chaos endpoint on {server.base_url} (faults: {rates or 'none'})", err=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def main() -> None:
    """Entry point of the ``steadyflow`` script."""
    app()


if __name__ == "__main__":
    main()
