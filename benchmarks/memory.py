"""Memory stays flat as a batch grows: peak RSS of `steadyflow run` at 1,000 and 20,000 documents.

    .venv/bin/python benchmarks/memory.py --json

Starts the chaos endpoint (no latency, no faults) in its own process and a real
`prefect server start`, then runs the same one-AI-stage pipeline
(benchmarks/pipelines/throughput.yaml) over N support tickets from a JSONL file
for each N, one after another, as `steadyflow run` subprocesses. Peak RSS is the
kernel's maximum resident set size of that process (os.wait4), sampled RSS
every 0.5 s shows whether it climbs during the run. Prints one JSON object;
ratio = peak RSS at the largest N / at the smallest.

With ``--full``, the pipeline is the full sandwich (benchmarks/pipelines/throughput_full.yaml:
the example's checks, run by check workers, one per core): the RSS sampled is then also that of
the whole process tree (the run and its workers), and ``ratio_tree_rss`` compares its highest
sample at the largest N with the smallest.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from throughput import FULL, PIPELINE, _serve, start_prefect, write_docs  # noqa: E402


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _tree(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    found = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += _tree(int(child))
    except OSError:
        pass
    return found


def measure(
    base_url: str, docs: Path, out: Path, env: dict[str, str], concurrency: int, pipeline: Path = PIPELINE
) -> dict[str, Any]:
    """Run `steadyflow run` over ``docs`` as a subprocess: documents, seconds, and its peak and sampled RSS in MB."""
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
    ]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[float] = []
    trees: list[float] = []

    def sample() -> None:
        while process.poll() is None:
            value = _rss_mb(process.pid)
            if value is not None:
                samples.append(value)
                trees.append(sum(_rss_mb(pid) or 0.0 for pid in _tree(process.pid)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    sampler.join()
    if status != 0:
        raise RuntimeError(f"steadyflow run failed with status {status}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    quarter = max(1, len(samples) // 4)
    return {
        "documents": summary["documents"],
        "outputs": summary["outputs"],
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "rss_mb_first_quarter_max": round(max(samples[:quarter]), 1) if samples else None,
        "rss_mb_last_quarter_max": round(max(samples[-quarter:]), 1) if samples else None,
        "tree_rss_mb_max": round(max(trees), 1) if trees else None,
        "tree_rss_mb_first_quarter_max": round(max(trees[:quarter]), 1) if trees else None,
        "tree_rss_mb_last_quarter_max": round(max(trees[-quarter:]), 1) if trees else None,
    }


def main() -> None:
    """Measure one run per --sizes batch size and print the runs and the peak RSS ratio as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,20000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--full", action="store_true", help="the full sandwich, with its check workers")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    chaos = multiprocessing.Process(target=_serve, args=(0.0, queue), daemon=True)
    chaos.start()
    base_url = f"http://127.0.0.1:{queue.get(timeout=60)}/v1"
    results = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        prefect, env = start_prefect(work / "prefect")
        try:
            for size in sizes:
                docs = work / f"docs-{size}.jsonl"
                write_docs(docs, size)
                pipeline = FULL if args.full else PIPELINE
                results.append(measure(base_url, docs, work / f"out-{size}", env, args.concurrency, pipeline))
                print(
                    f"{size} documents: peak RSS {results[-1]['peak_rss_mb']} MB in {results[-1]['seconds']} s",
                    file=sys.stderr,
                )
        finally:
            prefect.terminate()
            prefect.wait(30)
            chaos.terminate()
    result = {
        "runs": results,
        "ratio_peak_rss": round(results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"], 3),
        "ratio_tree_rss": round(results[-1]["tree_rss_mb_max"] / results[0]["tree_rss_mb_max"], 3),
        "command": "python benchmarks/memory.py --json"
        + ("" if args.sizes == "1000,20000" else f" --sizes {args.sizes}")
        + (" --full" if args.full else ""),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
