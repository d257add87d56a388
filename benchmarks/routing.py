"""Direct call vs static fallback chain vs steadyflow's routers, on a simulated provider fleet.

    .venv/bin/python benchmarks/routing.py --json                 # the scenario: benchmarks/scenarios/fleet.yaml
    .venv/bin/python benchmarks/routing.py --json --generate 7    # a scenario of our own, drawn from seed 7

Starts the scenario's fleet (steadyflow/chaos/fleet.py) on loopback in its own
process, generates the scenario's requests, and runs each strategy's pipeline file
(benchmarks/pipelines/{direct,static,router,adaptive}.yaml) over all of them through
steadyflow's engine, one strategy after another in the same run, each meeting the
same draws from the fleet (it is reset between strategies). The routers read only
their pipeline files and the documents, never the scenario.

Prints one JSON object (per strategy: latency p50/p95/p99 at real scale, cost per
10k requests including failed attempts and re-asks, structured-output success,
accepted-and-correct rate, share ended on fallback rungs, lost requests, hedges and
why documents entered where they did; and the routers' ratios to direct and static),
then a table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.audit.report import routing  # noqa: E402
from steadyflow.chaos.fleet import FleetServer, Request, load_scenario, workload  # noqa: E402
from steadyflow.spec import load_pipeline  # noqa: E402
from steadyflow.stages.document import Document  # noqa: E402
from steadyflow.stages.engine import Engine  # noqa: E402

STRATEGIES = ("direct", "static", "router", "adaptive")
PIPELINES = ROOT / "benchmarks" / "pipelines"
FLEET = "benchmarks/scenarios/fleet.yaml"
"""The default scenario, relative to the repository root (a copy kept in the repository)."""


def _serve(path: str, count: int, port: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The fleet, in its own process so that its timers do not share a core with the clients."""
    scenario = load_scenario(path)

    async def main() -> None:
        server = FleetServer(scenario, workload(scenario, count))
        await server.start_async()
        port.put(server.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


async def _strategy(name: str, requests: list[Request], concurrency: int) -> dict[str, Any]:
    pipeline = load_pipeline(PIPELINES / f"{name}.yaml")
    engine = Engine.create(pipeline, f"bench-{name}", concurrency=concurrency)
    slots = asyncio.Semaphore(concurrency)
    results: list[tuple[Request, Any, float, Document]] = []

    async def one(request: Request) -> None:
        async with slots:
            doc = Document(request.rid, request.text, "fleet")
            started = time.perf_counter()
            [record] = await engine.run_stage("answer", [doc])
            results.append((request, record, time.perf_counter() - started, doc))

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await engine.aclose()
    return _metrics(name, requests, results)


def real_ms(record: Any, elapsed_s: float, scale: float) -> float:
    """A request's latency at real scale.

    What the simulated providers spend (their processing time, which each response
    reports in OpenAI's ``openai-processing-ms`` header; the whole wait when no answer
    came; each wait that an endpoint asked for with Retry-After) is scaled back up by
    ``time_scale``. What steadyflow itself spends (its CPU, the transport, its own
    backoff policy, queueing on its semaphores) happened at real speed and is counted as
    it is: scaling everything would multiply the client's own milliseconds by 20 too.
    """
    wall = elapsed_s * 1000
    provider = sum(
        a.server_ms if a.server_ms is not None else a.latency_ms for a in record.attempts if a.kind == "model"
    )
    # a hedge went out after the rung's own call had run this long (in the provider's time)
    asked = sum(a.waited_ms for a in record.attempts if a.wait_reason in ("retry_after", "hedge"))
    return (provider + asked) * scale + max(0.0, wall - provider - asked)


def _metrics(name: str, requests: list[Request], results: list[tuple[Request, Any, float, Document]]) -> dict[str, Any]:
    scale = float(SCENARIO["time_scale"])
    latencies = [real_ms(record, elapsed, scale) for _, record, elapsed, _ in results]
    client = [
        max(0.0, elapsed * 1000 - sum(a.latency_ms + a.waited_ms for a in record.attempts))
        for _, record, elapsed, _ in results
    ]
    cost = sum(record.cost_usd for _, record, _, _ in results)
    delivered = [(r, rec, doc) for r, rec, _, doc in results if doc.outputs.get("answer") is not None]
    correct = [
        1
        for r, rec, doc in delivered
        if doc.outputs["answer"]["label"] == r.label and rec.status in ("validated", "cached")
    ]
    # ended below the rung where the request entered (its first model rung, or where routing sent it)
    fallback = [
        1
        for _, rec, _ in delivered
        if rec.status in ("rules", "default") or (rec.rung or 0) > (rec.route or {}).get("entry", 0)
    ]
    n = len(requests)
    return {
        "requests": n,
        "latency_ms": {
            "p50": round(_percentile(latencies, 50), 1),
            "p95": round(_percentile(latencies, 95), 1),
            "p99": round(_percentile(latencies, 99), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "client_overhead_ms_p50": round(_percentile(client, 50), 2),
        "cost_per_10k_usd": round(cost / n * 10_000, 4),
        "structured_output_success": round(len(delivered) / n, 5),
        "accepted_and_correct": round(len(correct) / n, 5),
        "fallback_share": round(len(fallback) / n, 5),
        "lost": n - len(results),
        "ended_on": _ended_on(results),
        **_hedges_and_entries(results),
    }


def _hedges_and_entries(results: list[tuple[Request, Any, float, Document]]) -> dict[str, Any]:
    """Hedges fired, won and what they cost (counted as `steadyflow report` counts them); why documents entered where.

    The entries keep the estimator's class beside the reason, which the report leaves out (the benchmark compares
    classes across strategies).
    """
    stored = [
        {"stage_id": r.stage_id, "status": r.status, "rung": r.rung, "route": r.route, "attempts": r.attempts_json()}
        for _, r, _, _ in results
    ]
    hedges = routing(stored).get("answer", {}).get("hedges", {"fired": 0, "won": 0, "usd": 0.0})
    entries: dict[str, int] = {}
    for _, record, _, _ in results:
        why = ((record.route or {}).get("adaptive") or {}).get("why")
        if why:
            key = f"{why}: {record.route['complexity']} -> rung {record.route['entry']}"
            entries[key] = entries.get(key, 0) + 1
    return {"hedges": hedges, "entries": dict(sorted(entries.items()))}


def _ended_on(results: list[tuple[Request, Any, float, Document]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, record, _, _ in results:
        key = record.rung_label or record.status
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _ratios(out: dict[str, Any]) -> dict[str, float]:
    direct, static = out["direct"], out["static"]
    ratios = {}
    for name in (name for name in ("router", "adaptive") if name in out):
        router = out[name]
        ratios |= {
            f"{name}_cost_vs_direct": round(router["cost_per_10k_usd"] / direct["cost_per_10k_usd"], 3),
            f"{name}_p50_vs_direct": round(router["latency_ms"]["p50"] / direct["latency_ms"]["p50"], 3),
            f"{name}_p95_vs_direct": round(router["latency_ms"]["p95"] / direct["latency_ms"]["p95"], 3),
            f"{name}_p95_vs_static": round(router["latency_ms"]["p95"] / static["latency_ms"]["p95"], 3),
            f"{name}_correct_minus_static": round(router["accepted_and_correct"] - static["accepted_and_correct"], 5),
        }
    return ratios


def _table(out: dict[str, Any]) -> str:
    lines = [
        f"{'strategy':9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'$/10k':>9} "
        f"{'struct':>7} {'correct':>8} {'fallback':>8} {'lost':>5}"
    ]
    for name in (name for name in STRATEGIES if name in out):
        m = out[name]
        lat = m["latency_ms"]
        lines.append(
            f"{name:9} {lat['p50']:>8.0f} {lat['p95']:>8.0f} {lat['p99']:>8.0f} {m['cost_per_10k_usd']:>9.2f} "
            f"{m['structured_output_success']:>7.2%} {m['accepted_and_correct']:>8.2%} "
            f"{m['fallback_share']:>8.2%} {m['lost']:>5}"
        )
    lines += [f"{key}: {value}" for key, value in out["ratios"].items()]
    return "\n".join(lines)


SCENARIO: dict[str, Any] = {}


def main() -> None:
    """Run the strategies and print the JSON object and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", default=str(ROOT / FLEET), help=f"scenario file (default: {FLEET})")
    parser.add_argument(
        "--generate",
        type=int,
        metavar="SEED",
        help="a scenario of our own drawn from SEED (steadyflow/chaos/scenarios.py)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON object on stdout (the table always goes to stderr)"
    )
    parser.add_argument("--requests", type=int, default=None, help="fewer requests than the scenario says (quick runs)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="requests in flight per strategy; low, so that client CPU does not queue (its time is scaled up too)",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="which strategies to run (direct and static always run: the ratios are against them)",
    )
    args = parser.parse_args()
    asked = [name.strip() for name in args.strategies.split(",") if name.strip()]
    if unknown := sorted(set(asked) - set(STRATEGIES)):
        parser.error(f"unknown strategy {', '.join(unknown)} (one of {', '.join(STRATEGIES)})")
    chosen = ["direct", "static", *(name for name in STRATEGIES[2:] if name in asked)]
    if args.generate is not None:  # written to a file: the fleet's own process reads it, the router never does
        import tempfile

        import yaml

        from steadyflow.chaos.scenarios import generate

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(generate(args.generate), handle)
        args.fleet = handle.name
    SCENARIO.update(load_scenario(args.fleet))
    count = args.requests or int(SCENARIO["requests"])
    requests = workload(SCENARIO, count)
    port: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=_serve, args=(args.fleet, count, port), daemon=True)
    server.start()
    try:
        os.environ["FLEET_URL"] = f"http://127.0.0.1:{port.get(timeout=30)}"
        fleet = Path(args.fleet).resolve()
        shown = fleet.relative_to(ROOT) if fleet.is_relative_to(ROOT) else fleet  # no machine's folders in the JSON
        shown = f"generated from seed {args.generate}" if args.generate is not None else shown
        out: dict[str, Any] = {"scenario": str(shown), "requests": count, "time_scale": SCENARIO["time_scale"]}
        for name in chosen:
            # common random numbers: each strategy meets the same draws from the fleet (see FleetServer)
            reset = urllib.request.Request(f"{os.environ['FLEET_URL']}/_chaos/reset", method="POST")
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(reset, timeout=10) as answer:
                assert answer.status == 200, answer.status  # loopback: never through a proxy
            started = time.perf_counter()
            out[name] = asyncio.run(_strategy(name, requests, args.concurrency))
            out[name]["wall_s"] = round(time.perf_counter() - started, 1)
            print(f"{name}: done in {out[name]['wall_s']} s", file=sys.stderr)
    finally:
        server.terminate()
        server.join(10)
    out["ratios"] = _ratios(out)
    if args.json:
        print(json.dumps(out))
    print(_table(out), file=sys.stderr)


if __name__ == "__main__":
    main()
