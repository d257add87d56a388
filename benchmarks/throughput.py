"""steadyflow vs a hand-written asyncio + instructor loop: the same calls, side by side, in one run.

    .venv/bin/python benchmarks/throughput.py --json

Starts the chaos endpoint (fixed latency, no faults) in its own process and a real
`prefect server start`, writes N support tickets as JSONL, then alternates for
--rounds rounds:

* **hand loop**: ``instructor.from_openai(AsyncOpenAI(...))``, an ``asyncio.Semaphore``
  of --concurrency, one ``chat.completions.create(response_model=Triage)`` per
  ticket, results appended to a JSONL file: what one writes without steadyflow
  (the openai SDK's default httpx transport);
* **hand loop, aiohttp**: the same loop with ``http_client=DefaultAioHttpClient()``,
  the transport steadyflow uses, so the ratio against the best hand loop shows too;
* **steadyflow**: ``steadyflow run benchmarks/pipelines/throughput.yaml --json``
  (same prompt, same output model, same concurrency) as a Prefect flow, with
  decision records, sinks, the ladder and the audit trail (a SQLite store in the
  benchmark's temporary folder);
* **steadyflow, no audit trail**: the same run with ``--set audit.enabled=false``,
  so ``audit_ratio`` (with / without) is what the trail costs;
* with ``--traced URL``, **steadyflow, traced**: the bare run exporting its OpenTelemetry spans to the
  collector at URL (``--set telemetry.otlp_endpoint=URL``); ``traced_ratio`` is traced / bare, and
  every span must have reached the collector;
* with ``--full``, **steadyflow, full sandwich**: ``benchmarks/pipelines/throughput_full.yaml``,
  the same model, prompt, output and ladder with the example's own checks (injection signs and PII
  redaction before the model; the business rule, PII, secrets and format guards and the embedding
  similarity after it), over the same tickets and the same endpoint. ``full_ratio`` is full / bare
  and ``bare_vs_limit`` the bare run against the endpoint's limit (concurrency / latency). The CPU
  seconds of each ``steadyflow run`` (its process and its check workers) are reported per document.

Throughput is documents / seconds of batch work: the hand loop from client
creation to the last row written; steadyflow from the start of its batch to the
last sink write and the run's store update (`duration_s` of its summary). The
CLI's wall time, with interpreter start, imports and flow-run creation, is
printed beside it. Prints one JSON object; ratio = steadyflow / hand loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.chaos.server import ChaosConfig, ChaosServer  # noqa: E402

PIPELINE = ROOT / "benchmarks" / "pipelines" / "throughput.yaml"
FULL = ROOT / "benchmarks" / "pipelines" / "throughput_full.yaml"
#: Every third ticket signs with a name and a way to reach its author: what input redaction has to find.
SIGNATURES = [
    "Jane Miller, jane.miller@example.com",
    "call Tom Becker on +1 415 555 0134",
    "Priya Shah (priya.shah@corp.example), card 4111 1111 1111 1111",
]
TOPICS = [
    "my invoice shows a charge twice, please refund",
    "the app crashes when I open settings",
    "I cannot log in after the password reset",
    "my parcel has not moved for a week",
    "how do I change my plan?",
]


def _serve(latency_ms: float, port: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The chaos endpoint in its own process, so its work does not share a core with the clients."""

    async def main() -> None:
        server = ChaosServer(ChaosConfig(latency_ms=latency_ms, seed=1, keep_requests=1))
        await server.start_async()
        port.put(server.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def write_docs(path: Path, count: int) -> None:
    """Write ``count`` synthetic support tickets to ``path`` as JSONL (``id`` and ``text`` per line)."""
    with path.open("w") as handle:
        for i in range(count):
            text = f"Ticket {i}: {TOPICS[i % len(TOPICS)]}. Order {10000 + i}, customer since {2010 + i % 15}."
            if i % 3 == 0:
                text += f" {SIGNATURES[i // 3 % len(SIGNATURES)]}."
            handle.write(json.dumps({"id": f"t{i:05d}", "text": text}) + "\n")


async def hand_loop(base_url: str, docs: Path, out: Path, concurrency: int, aiohttp: bool = False) -> float:
    """The loop one writes by hand: instructor over AsyncOpenAI, a semaphore, results to JSONL."""
    import instructor
    from openai import AsyncOpenAI, DefaultAioHttpClient
    from pydantic import BaseModel

    class Triage(BaseModel):
        category: Literal["billing", "technical", "account", "shipping", "other"]
        summary: str

    rows = [json.loads(line) for line in docs.read_text().splitlines()]
    started = time.perf_counter()
    http = DefaultAioHttpClient() if aiohttp else None
    client = instructor.from_openai(
        AsyncOpenAI(base_url=base_url, api_key="none", max_retries=2, timeout=30, http_client=http)
    )
    slots = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        async with slots:
            result = await client.chat.completions.create(
                model="chaos",
                response_model=Triage,
                max_retries=1,
                temperature=0,
                max_tokens=512,
                messages=[
                    {"role": "system", "content": "You triage support tickets."},
                    {
                        "role": "user",
                        "content": f"Classify this ticket and summarise it in one sentence.\n\n{row['text']}",
                    },
                ],
            )
            return {"id": row["id"], "output": result.model_dump(mode="json")}

    results = await asyncio.gather(*(one(row) for row in rows))
    with out.open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in results)
    await client.client.close()
    return time.perf_counter() - started


def steadyflow_run(
    base_url: str, docs: Path, out: Path, concurrency: int, env: dict[str, str], *extra: str, pipeline: Path = PIPELINE
) -> tuple[float, float, dict[str, Any]]:
    """(batch seconds, CLI wall seconds, summary) of one `steadyflow run` (``extra``: more CLI arguments).

    The summary gains ``cpu_s``: the CPU seconds (user + system) of the CLI's process and of the
    processes it started and waited for (its check workers).
    """
    cmd = [
        sys.executable,
        "-m",
        "steadyflow.cli",
        "run",
        str(pipeline),
        "--json",
        "--input",
        str(docs),
        "--output",
        str(out),
        "--concurrency",
        str(concurrency),
        "--set",
        f"models.m.base_url={base_url}",
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary["duration_s"], wall, summary


def start_prefect(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start a Prefect server on a free loopback port with ``home`` as PREFECT_HOME; the process and its env."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return server, {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}


def _full_round(
    base_url: str, docs: Path, out: Path, args: argparse.Namespace, env: dict[str, str], bare_s: float
) -> dict[str, Any]:
    """One run of the full sandwich over the same tickets and endpoint; its figures beside the bare run's."""
    extra = [item for value in args.set for item in ("--set", value)]
    full_s, _, full = steadyflow_run(base_url, docs, out, args.concurrency, env, *extra, pipeline=FULL)
    assert full["documents"] == args.documents, full  # every ticket ended: an output or a recorded quarantine
    print(
        f"  full sandwich {args.documents / full_s:.1f} docs/s (full / bare {bare_s / full_s:.3f}), "
        f"{full['cpu_s'] * 1000 / args.documents:.1f} ms of CPU per document; {full['outputs']} outputs, "
        f"{full['quarantined']} quarantined",
        file=sys.stderr,
    )
    return {
        "full_batch_s": round(full_s, 2),
        "full_docs_per_s": round(args.documents / full_s, 1),
        "full_ratio": round(bare_s / full_s, 3),
        "full_cpu_ms_per_doc": round(full["cpu_s"] * 1000 / args.documents, 2),
        "full_model_calls_per_doc": round(full["attempts"] / args.documents, 3),
        "full_outputs": full["outputs"],
        "full_quarantined": full["quarantined"],
    }


def _traced_round(
    base_url: str, docs: Path, out: Path, args: argparse.Namespace, env: dict[str, str], bare_s: float
) -> dict[str, Any]:
    """The bare run again, its spans exported to the collector at ``--traced``: what tracing costs."""
    traced_s, _, traced = steadyflow_run(
        base_url, docs, out, args.concurrency, env, "--set", f"telemetry.otlp_endpoint={args.traced}"
    )
    assert traced["outputs"] == args.documents and not traced["notes"], traced  # every span reached it
    print(f"  traced {args.documents / traced_s:.1f} docs/s (traced / bare {bare_s / traced_s:.3f})", file=sys.stderr)
    return {"traced_docs_per_s": round(args.documents / traced_s, 1), "traced_ratio": round(bare_s / traced_s, 3)}


def main() -> None:
    """Time the hand loops and steadyflow over the same tickets for --rounds rounds; print the medians as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object (a table goes to stderr either way)")
    parser.add_argument("--full", action="store_true", help="also run the full sandwich (the example's checks)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a --set for the full sandwich's run"
    )
    parser.add_argument("--traced", metavar="URL", help="also run the bare pipeline exporting spans to this collector")
    args = parser.parse_args()

    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    chaos = multiprocessing.Process(target=_serve, args=(args.latency_ms, queue), daemon=True)
    chaos.start()
    base_url = f"http://127.0.0.1:{queue.get(timeout=60)}/v1"
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        docs = work / "docs.jsonl"
        write_docs(docs, args.documents)
        prefect, env = start_prefect(work / "prefect")
        env["STEADYFLOW_AUDIT_URL"] = f"sqlite:///{work / 'audit.sqlite'}"  # never the user's own trail
        rounds: list[dict[str, Any]] = []
        try:
            for number in range(args.rounds):
                loop_s = asyncio.run(hand_loop(base_url, docs, work / f"loop-{number}.jsonl", args.concurrency))
                aio_s = asyncio.run(
                    hand_loop(base_url, docs, work / f"aio-{number}.jsonl", args.concurrency, aiohttp=True)
                )
                batch_s, wall_s, summary = steadyflow_run(base_url, docs, work / f"sf-{number}", args.concurrency, env)
                assert summary["outputs"] == args.documents, summary
                off_s, _, off = steadyflow_run(
                    base_url, docs, work / f"off-{number}", args.concurrency, env, "--set", "audit.enabled=false"
                )
                assert off["outputs"] == args.documents and off["audit"] is None and summary["audit"], off
                full = _full_round(base_url, docs, work / f"full-{number}", args, env, batch_s) if args.full else {}
                if args.traced:
                    full.update(_traced_round(base_url, docs, work / f"traced-{number}", args, env, batch_s))
                rounds.append(
                    {
                        **full,
                        "hand_loop_s": round(loop_s, 2),
                        "hand_loop_aiohttp_s": round(aio_s, 2),
                        "steadyflow_batch_s": round(batch_s, 2),
                        "steadyflow_cli_wall_s": round(wall_s, 2),
                        "hand_loop_docs_per_s": round(args.documents / loop_s, 1),
                        "hand_loop_aiohttp_docs_per_s": round(args.documents / aio_s, 1),
                        "steadyflow_docs_per_s": round(args.documents / batch_s, 1),
                        "ratio": round(loop_s / batch_s, 3),
                        "ratio_vs_aiohttp_loop": round(aio_s / batch_s, 3),
                        "steadyflow_no_audit_docs_per_s": round(args.documents / off_s, 1),
                        "audit_ratio": round(off_s / batch_s, 3),
                        "by_rung": summary["by_rung"],
                        "steadyflow_cpu_ms_per_doc": round(summary["cpu_s"] * 1000 / args.documents, 2),
                    }
                )
                print(
                    f"round {number + 1}: hand loop {args.documents / loop_s:.1f} docs/s, "
                    f"with aiohttp {args.documents / aio_s:.1f}, "
                    f"steadyflow {args.documents / batch_s:.1f} docs/s (ratio {loop_s / batch_s:.3f}, vs aiohttp loop "
                    f"{aio_s / batch_s:.3f}; CLI wall {wall_s:.1f} s); without the audit trail "
                    f"{args.documents / off_s:.1f} docs/s (with / without {off_s / batch_s:.3f})",
                    file=sys.stderr,
                )
        finally:
            prefect.terminate()
            prefect.wait(30)
            chaos.terminate()
    ideal = args.concurrency / (args.latency_ms / 1000)
    result = {
        "documents": args.documents,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "ideal_docs_per_s": round(ideal, 1),
        "hand_loop_docs_per_s": statistics.median(r["hand_loop_docs_per_s"] for r in rounds),
        "hand_loop_aiohttp_docs_per_s": statistics.median(r["hand_loop_aiohttp_docs_per_s"] for r in rounds),
        "steadyflow_docs_per_s": statistics.median(r["steadyflow_docs_per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "ratio_vs_aiohttp_loop": statistics.median(r["ratio_vs_aiohttp_loop"] for r in rounds),
        "steadyflow_no_audit_docs_per_s": statistics.median(r["steadyflow_no_audit_docs_per_s"] for r in rounds),
        "audit_ratio": statistics.median(r["audit_ratio"] for r in rounds),
        "steadyflow_cli_wall_docs_per_s": statistics.median(
            round(args.documents / r["steadyflow_cli_wall_s"], 1) for r in rounds
        ),
        "steadyflow_cpu_ms_per_doc": statistics.median(r["steadyflow_cpu_ms_per_doc"] for r in rounds),
        "bare_vs_limit": round(statistics.median(r["steadyflow_docs_per_s"] for r in rounds) / ideal, 3),
        "rounds": rounds,
        "command": "python benchmarks/throughput.py --json"
        + ("" if args.documents == 5000 else f" --documents {args.documents}")
        + (" --full" if args.full else "")
        + (f" --traced {args.traced}" if args.traced else "")
        + "".join(f" --set {value}" for value in args.set),
    }
    if args.full:
        for key in ("full_docs_per_s", "full_ratio", "full_cpu_ms_per_doc", "full_model_calls_per_doc"):
            result[key] = statistics.median(r[key] for r in rounds)
    if args.traced:
        for key in ("traced_docs_per_s", "traced_ratio"):
            result[key] = statistics.median(r[key] for r in rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
