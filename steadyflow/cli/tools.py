"""``steadyflow local-model ...`` and ``steadyflow chaos serve``.

The embedded model and the fault-injecting endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from steadyflow.cli import EXIT_INVALID, app

chaos_app = typer.Typer(
    no_args_is_help=True, help="A fault-injecting OpenAI-compatible endpoint for testing degradation."
)
app.add_typer(chaos_app, name="chaos")
local_app = typer.Typer(
    no_args_is_help=True, help="The embedded local model: where it is, and a server that runs can share."
)
app.add_typer(local_app, name="local-model")


@local_app.command("info")
def local_info(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Where the default model file is, its size and SHA-256, and whether a served server runs."""
    from steadyflow.providers.local_model import DEFAULT_MODEL, file_sha256, model_file
    from steadyflow.providers.local_server import served

    path = model_file()
    sha = file_sha256(path) if path.is_file() else None
    server = served()
    info = {
        "model": DEFAULT_MODEL.name,
        "origin": DEFAULT_MODEL.origin,
        "licence": DEFAULT_MODEL.licence,
        "path": str(path),
        "present": path.is_file(),
        "size": path.stat().st_size if path.is_file() else None,
        "sha256": sha,
        "pinned_sha256": DEFAULT_MODEL.sha256,
        "verified": sha == DEFAULT_MODEL.sha256,
        "server": None
        if server is None
        else {"pid": server.pid, "base_url": server.base_url, "model_path": server.model_path},
    }
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    for key, value in info.items():
        if key != "server":
            typer.echo(f"{key}: {value}")
    typer.echo(
        f"server: {server.base_url} (pid {server.pid}, {server.model_path})" if server else "server: none running"
    )


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
    typer.echo(
        f"serving {info.model_path} at {info.base_url} (pid {info.pid}); stop it with: steadyflow local-model stop"
    )


@local_app.command("stop")
def local_stop() -> None:
    """Stop the server that `local-model serve` started."""
    from steadyflow.providers.local_server import stop_served

    info = stop_served()
    typer.echo(
        f"stopped the server at {info.base_url} (pid {info.pid})" if info else "no local model server was running"
    )


@chaos_app.command("serve")
def chaos_serve(
    host: Annotated[str, typer.Option(help="loopback address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 8765,
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="KIND=RATE, e.g. 429=0.1 timeout=0.02 (repeatable)")
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="added to every completion")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of fault and answer choices")] = 0,
    hang_s: Annotated[float, typer.Option(help="how long a 'timeout' fault hangs")] = 120.0,
    script: Annotated[Path | None, typer.Option(help="JSONL of scripted answers served first, in order")] = None,
    skew: Annotated[
        list[str] | None,
        typer.Option(
            "--skew",
            help="FIELD=VALUE:SHARE: answers give FIELD this value that often, e.g. "
            "category=billing:0.6 (a model that drifted; repeatable)",
        ),
    ] = None,
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
    skews: dict[str, tuple[Any, float]] = {}
    for item in skew or []:
        name, _, rest = item.partition("=")
        value, _, share = rest.rpartition(":")
        try:
            skews[name] = (_json_or_text(value), float(share))
        except ValueError:
            typer.echo(f"--skew {item}: expected FIELD=VALUE:SHARE, e.g. category=billing:0.6", err=True)
            raise typer.Exit(EXIT_INVALID) from None
        if not name or not value or not 0 <= skews[name][1] <= 1:
            typer.echo(f"--skew {item}: expected FIELD=VALUE:SHARE with SHARE between 0 and 1", err=True)
            raise typer.Exit(EXIT_INVALID)
    try:
        config = ChaosConfig(faults=rates, latency_ms=latency_ms, seed=seed, hang_s=hang_s, skew=skews)
    except ValueError as exc:
        typer.echo(f"--fault: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    server = ChaosServer(config, host=host, port=port)
    if script is not None:
        try:
            server.script.extend(json.loads(line) for line in script.read_text().splitlines() if line.strip())
        except (OSError, ValueError) as exc:
            typer.echo(
                f"--script {script}: {getattr(exc, 'strerror', None) or 'not JSONL (one JSON object per line)'}",
                err=True,
            )
            raise typer.Exit(EXIT_INVALID) from None

    async def serve() -> None:
        await server.start_async()
        skewed = f"; skew: {', '.join(f'{k}={v}:{share:g}' for k, (v, share) in skews.items())}" if skews else ""
        typer.echo(f"chaos endpoint on {server.base_url} (faults: {rates or 'none'}{skewed})", err=True)
        await asyncio.Event().wait()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except OSError as exc:  # a busy port, an address that is not ours: one line, not asyncio's traceback
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own message repeats the address
        typer.echo(f"cannot listen on {host}:{port}: {reason}; --port 0 picks a free port", err=True)
        raise typer.Exit(1) from None


def _json_or_text(value: str) -> Any:
    """A --skew value: JSON where it parses (9, true, null), else the text itself (billing)."""
    try:
        return json.loads(value)
    except ValueError:
        return value
