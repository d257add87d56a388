"""The embedded model's throughput on the example, server settings side by side, accuracy checked by eval.

    .venv/bin/python benchmarks/local_speed.py [--documents 20] [--dataset FILE] [--ends] [--json]

Starts the example's model server (steadyflow.providers.llama_host) once per variant, one after
the other on the same machine, and runs ``steadyflow eval`` of ``configs/support_triage.yaml``
over the first N labelled tune tickets (or of ``--dataset``) against it
(``--set models.small.base_url=...``), so every variant sees the same documents and checks; the
last one also the example's prompt as it is now (a 12-word summary), the others the prompt as it
was (``benchmarks/scenarios/triage_prompt_before.md``). ``--ends`` runs only the first and the
last variant. Prints documents per second (eval's own
figure: first document sent to last scored; the model load and the process start excluded), the
accuracy of category and priority, and each variant's ratio to the first one: the server as it
ran before issue 14 (llama-cpp-python's defaults: every token's logits kept, the grammar testing the
whole vocabulary for every generated token, one server using both cores). The last variant is what
a run now starts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE_PROMPT = "benchmarks/scenarios/triage_prompt_before.md"
"""The example's prompt before issue 14 (its summary: one sentence of up to 200 characters)."""
sys.path.insert(0, str(ROOT))

from steadyflow.providers.local_model import default_model  # noqa: E402
from steadyflow.providers.local_server import _wait_ready, free_port  # noqa: E402

#: name: (the model host's arguments, eval's --set overrides, the prompt file: the example's own if None)
VARIANTS: dict[str, tuple[list[str], list[str], str | None]] = {
    "before (logits kept, library sampling)": (["--logits-all", "--library-sampling"], [], BEFORE_PROMPT),
    "logits only when asked": (["--library-sampling"], [], BEFORE_PROMPT),
    "+ grammar tests the winner first": ([], [], BEFORE_PROMPT),
    "+ two one-thread servers": (["--workers", "2"], ["models.small.servers=2"], BEFORE_PROMPT),
    "+ a 12-word summary (now)": (["--workers", "2"], ["models.small.servers=2"], None),
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


def _pipeline(tmp: Path, prompt: str | None) -> Path:
    """The example, or a copy of its folder with another prompt file (prompts are read from the pipeline's folder)."""
    if prompt is None:
        return ROOT / "configs/support_triage.yaml"
    folder = tmp / "configs"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "configs", folder)
    shutil.copyfile(ROOT / prompt, folder / "prompts/triage.md")
    return folder / "support_triage.yaml"


def _eval(pipeline: Path, url: str, dataset: Path, extra_sets: list[str]) -> dict[str, Any]:
    sets = [f"models.small.base_url={url}", *extra_sets]
    cmd = [sys.executable, "-m", "steadyflow.cli", "eval", str(pipeline), "--dataset", str(dataset)]
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
    parser.add_argument("--dataset", type=Path, default=ROOT / "configs/data/labelled/tickets_tune.jsonl")
    parser.add_argument("--ends", action="store_true", help="only the first and the last variant")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tune = args.dataset.read_text().splitlines()[: args.documents]
    names = list(VARIANTS)
    chosen = [names[0], names[-1]] if args.ends else names
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "tune.jsonl"
        dataset.write_text("\n".join(tune) + "\n")
        warm = Path(tmp) / "warm.jsonl"
        warm.write_text("\n".join(tune[:4]) + "\n")
        for name in chosen:
            extra, sets, prompt = VARIANTS[name]
            pipeline = _pipeline(Path(tmp), prompt)
            proc, url = _serve(extra, Path(tmp) / "server.log")
            try:
                _eval(pipeline, url, warm, sets)  # warm: the page cache and the servers' prompt caches
                summary = _eval(pipeline, url, dataset, sets)
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
