"""Start-up and the inner loop: how long whole ``steadyflow`` processes take, from a fresh interpreter each time.

Measures, N runs each (median and min wall seconds from start to exit, and the median CPU seconds
of the process and its children, which a busy machine moves less):

- ``steadyflow --help`` and ``steadyflow validate configs/support_triage.yaml`` (target <= 0.5 s);
- ``steadyflow try`` of 3 tickets against a ``steadyflow chaos serve`` started here (target <= 3 s);
- ``steadyflow run`` of the same 3 tickets against a ``prefect server`` started here with a
  temporary PREFECT_HOME (target <= 4 s); the server's own start-up is not counted.

The example pipeline's model points at the chaos endpoint (``--set models.small.provider=openai
--set models.small.base_url=...``), so no model load is in the figures; its checks (presidio,
guardrails-ai, ONNX embeddings, CEL) are. ``try`` and ``run`` are also measured on a "lean"
variant of the example, built in a temporary folder without its safety layers (no
``redact_pii``/``restore_pii``, no pii, secrets, format or similar check; the CEL rule stays):
those rows are steadyflow's own start-up, the example's rows add the libraries its checks need.

    .venv/bin/python benchmarks/startup.py [--runs N] [--json] [--skip-run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SF = str(Path(sys.executable).parent / "steadyflow")
PIPELINE = "configs/support_triage.yaml"
TARGETS = {"help": 0.5, "validate": 0.5, "try": 3.0, "run": 4.0, "try lean": 3.0, "run lean": 4.0}
#: Checks the lean variant leaves out: each loads a heavy library (presidio and spaCy, guardrails-ai, ONNX).
SAFETY_CHECKS = {"pii", "secrets", "format", "similar"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _time(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds of ``runs`` fresh processes of ``cmd`` (after one warm-up run that fills the OS file cache)."""
    seconds, cpu = [], []
    for index in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])}... exited {result.returncode}: {result.stderr[-2000:]}")
        if index > 0:
            seconds.append(elapsed)
            # CPU seconds of the process and its children: steadier than wall time on a busy machine
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "cpu_median_s": round(statistics.median(cpu), 3),
        "runs": runs,
    }


def _tickets(folder: Path) -> Path:
    folder.mkdir()
    for name in ("t01.txt", "t02.txt", "t03.txt"):
        shutil.copy(ROOT / "configs" / "data" / "tickets" / name, folder / name)
    return folder


def _lean_pipeline(folder: Path) -> Path:
    """The example pipeline without its safety layers, beside copies of its prompts and rules."""
    spec = yaml.safe_load((ROOT / PIPELINE).read_text())
    for stage in spec["stages"]:
        for key in ("redact_pii", "restore_pii"):
            stage.get("input", {}).pop(key, None)
        stage["validate"] = [check for check in stage.get("validate", []) if check.get("check") not in SAFETY_CHECKS]
    folder.mkdir()
    for sub in ("prompts", "rules"):
        shutil.copytree((ROOT / PIPELINE).parent / sub, folder / sub)
    path = folder / Path(PIPELINE).name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait(f"http://127.0.0.1:{port}/api/health", 180)
    return server, {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(runs: int, with_run: bool) -> dict[str, Any]:
    """Every figure, by command name."""
    results: dict[str, Any] = {
        "help": _time([SF, "--help"], runs),
        "validate": _time([SF, "validate", PIPELINE], runs),
    }
    with tempfile.TemporaryDirectory(prefix="steadyflow-startup-") as tmp:
        folder = _tickets(Path(tmp) / "tickets")
        port = _free_port()
        chaos = subprocess.Popen(
            [SF, "chaos", "serve", "--port", str(port), "--seed", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(f"http://127.0.0.1:{port}/v1/models", 60)
            model = [
                "--set",
                "models.small.provider=openai",
                "--set",
                f"models.small.base_url=http://127.0.0.1:{port}/v1",
            ]
            lean = str(_lean_pipeline(Path(tmp) / "lean"))
            results["try"] = _time([SF, "try", PIPELINE, "--input", str(folder), *model], runs)
            results["try lean"] = _time([SF, "try", lean, "--input", str(folder), *model], runs)
            if with_run:
                home = Path(tmp) / "prefect-home"
                home.mkdir()
                server, env = _prefect_server(home)
                try:
                    out = Path(tmp) / "out"
                    run = [SF, "run", PIPELINE, "--input", str(folder), "--output", str(out), "--quiet", *model]
                    results["run"] = _time([*run, "--overwrite"], runs, env)
                    run[2] = lean
                    results["run lean"] = _time([*run, "--overwrite"], runs, env)
                finally:
                    _stop(server)
        finally:
            _stop(chaos)
    for name, figure in results.items():
        figure["target_s"] = TARGETS[name]
        figure["met"] = figure["median_s"] <= TARGETS[name]
    return results


def main() -> None:
    """Time each command --runs times and print a table of medians against their targets (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (after one warm-up run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-run", action="store_true", help="leave out `run` (starting a Prefect server)")
    args = parser.parse_args()
    results = measure(args.runs, not args.skip_run)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'command':10} {'median s':>9} {'min s':>7} {'cpu s':>7} {'target s':>9}  verdict (on the median)")
    for name, figure in results.items():
        verdict = "ok" if figure["met"] else f"over by {figure['median_s'] - figure['target_s']:.2f} s"
        print(
            f"{name:10} {figure['median_s']:>9.3f} {figure['min_s']:>7.3f} {figure['cpu_median_s']:>7.3f} "
            f"{figure['target_s']:>9.1f}  {verdict}"
        )


if __name__ == "__main__":
    main()
