"""The example pipeline on the embedded local model: throughput, model latency, rungs.

Runs ``configs/support_triage.yaml`` over its 44 tickets twice, side by side in one
invocation, as a user would from the CLI:

- cold: the run assembles/verifies the model and starts its own llama.cpp server;
- served: ``steadyflow local-model serve`` is already running and the run reuses it.

Prints documents per second, model-call latency p50/p95 (from the decision
records), how many documents ended on each rung, and the served/cold ratio.

    .venv/bin/python benchmarks/local_model.py [--concurrency N] [--input PATH]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "steadyflow.cli"]


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _run(label: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        *CLI,
        "run",
        "configs/support_triage.yaml",
        "--json",
        "--output",
        str(out),
        "--concurrency",
        str(args.concurrency),
    ]
    if args.input:
        cmd += ["--input", args.input]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{label} run failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    db = sqlite3.connect(out / "decisions.sqlite")
    latencies = [
        a["latency_ms"]
        for (raw,) in db.execute("SELECT attempts FROM decisions")
        for a in json.loads(raw)
        if a["kind"] == "model"
    ]
    db.close()
    return {
        "label": label,
        "wall_s": wall,
        "flow_s": summary["duration_s"],
        "documents": summary["documents"],
        "docs_per_s": summary["documents"] / wall,
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "model_calls": len(latencies),
        "rungs": summary["by_rung"].get("triage", {}),
        "quarantined": summary["quarantined"],
        "tokens": summary["tokens"]["total"],
    }


def main() -> None:
    """Run both variants and print a table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--input", default=None, help="documents instead of the example's tickets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        results = [_run("cold", Path(tmp) / "cold", args)]
        served = subprocess.run([*CLI, "local-model", "serve"], cwd=ROOT, capture_output=True, text=True, check=False)
        if served.returncode != 0:
            sys.exit(f"local-model serve failed: {served.stderr}")
        try:
            results.append(_run("served", Path(tmp) / "served", args))
        finally:
            subprocess.run([*CLI, "local-model", "stop"], cwd=ROOT, capture_output=True, check=False)
    print(
        f"{'run':8} {'docs':>5} {'wall s':>8} {'flow s':>8} {'docs/s':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'calls':>6} {'quar.':>6}  rungs"
    )
    for r in results:
        rungs = ", ".join(f"{k} {v}" for k, v in sorted(r["rungs"].items()))
        print(
            f"{r['label']:8} {r['documents']:>5} {r['wall_s']:>8.1f} {r['flow_s']:>8.1f} {r['docs_per_s']:>7.3f} "
            f"{r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['model_calls']:>6} {r['quarantined']:>6}  {rungs}"
        )
    cold, warm = results
    print(
        f"served/cold throughput ratio: {warm['docs_per_s'] / cold['docs_per_s']:.2f}x "
        f"(wall {cold['wall_s']:.1f}s -> {warm['wall_s']:.1f}s, concurrency {args.concurrency})"
    )


if __name__ == "__main__":
    main()
