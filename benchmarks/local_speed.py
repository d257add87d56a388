"""The embedded model's throughput on the example, server settings side by side, accuracy checked by eval.

    .venv/bin/python benchmarks/local_speed.py [--documents 20] [--json]

Starts the example's model server (steadyflow.providers.llama_host) once per variant, one after
the other on the same machine, and runs ``steadyflow eval`` of ``configs/support_triage.yaml``
over the first N labelled tune tickets against it (``--set models.small.base_url=...``), so every
variant sees the same documents, prompt and checks. Prints documents per second (eval's own
figure: first document sent to last scored; the model load and the process start excluded), the
accuracy of category and priority, and each variant's ratio to the first one: the server as it
ran before issue 14 (llama-cpp-python's defaults: every token's logits kept, the grammar testing the
whole vocabulary for every generated token, one server using both cores). The last variant is what
a run now starts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.providers.local_model import default_model  # noqa: E402
from steadyflow.providers.local_server import _wait_ready, free_port  # noqa: E402

#: name: (the model host's arguments, eval's --set overrides)
VARIANTS: dict[str, tuple[list[str], list[str]]] = {
    "before (logits kept, library sampling)": (["--logits-all", "--library-sampling"], []),
    "logits only when asked": (["--library-sampling"], []),
    "+ grammar tests the winner first": ([], []),
    "+ two one-thread servers (now)": (["--workers", "2"], ["models.small.servers=2"]),
}


def _serve(extra: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    model, _ = default_model()
    port = free_port()
    cmd = [sys.executable, "-m", "steadyflow.providers.llama_host", "--model", str(model), "--port", str(port)]
    handle = log.open("wb")
    proc = subprocess.Popen([*cmd, *extra], stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    _wait_ready(proc, url, log)
    return proc, url


def _eval(url: str, dataset: Path, extra_sets: list[str]) -> dict[str, Any]:
    sets = [f"models.small.base_url={url}", *extra_sets]
    cmd = [sys.executable, "-m", "steadyflow.cli", "eval", "configs/support_triage.yaml", "--dataset", str(dataset)]
    cmd += ["--json", *(a for s in sets for a in ("--set", s))]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def main() -> None:
    """Run every variant and print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tune = (ROOT / "configs/data/labelled/tickets_tune.jsonl").read_text().splitlines()[: args.documents]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "tune.jsonl"
        dataset.write_text("\n".join(tune) + "\n")
        for name, (extra, sets) in VARIANTS.items():
            proc, url = _serve(extra, Path(tmp) / "server.log")
            try:
                _eval(url, dataset, sets)  # warm: the page cache and the server's prompt cache
                summary = _eval(url, dataset, sets)
            finally:
                proc.terminate()
                proc.wait(30)
            fields = summary["fields"]
            results[name] = {
                "documents": summary["documents"],
                "wall_s": round(summary["duration_s"], 2),
                "docs_per_s": summary["documents_per_s"],
                "category": fields["triage.category"]["accuracy"],
                "priority": fields["triage.priority"]["accuracy"],
            }
    first = next(iter(results.values()))
    for row in results.values():
        row["ratio"] = round(row["docs_per_s"] / first["docs_per_s"], 3)
    if args.json:
        print(json.dumps(results))
    for name, row in results.items():
        print(
            f"{name:40} {row['documents']:>4} docs {row['wall_s']:>7.1f} s {row['docs_per_s']:>6.3f} docs/s "
            f"x{row['ratio']:<6} category {row['category']:.3f} priority {row['priority']:.3f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
