"""CPU time of each check per document: one at a time (as in the event loop) and batched (as a check worker runs them).

    .venv/bin/python benchmarks/checks_cpu.py --json            # both, side by side
    .venv/bin/python benchmarks/checks_cpu.py --json --alone    # one at a time only (runs on older commits too)

The example's own checks (``configs/support_triage.yaml``) over its readable tickets, repeated
``--rounds`` times, each ticket's answer made from its text (so that the PII, secrets and format
checks have something to find and fix). For each check alone, in this process:

* **alone**: one document after another, the way the loop ran them (``prepare`` for input
  redaction, ``run_check`` for the others);
* **batched**: the same documents in batches of ``--batch``, through
  :func:`steadyflow.validators.pool.work`, the function a check worker runs (spaCy over a
  batch at once, the embedder once per text length, then each document's check).

Reports CPU milliseconds per document (``time.process_time``, after a warm-up that loads the
models) and the ratio. Input redaction includes injection signs, as ``prepare`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.io.sources import read_documents, source_for  # noqa: E402
from steadyflow.spec import load_pipeline  # noqa: E402
from steadyflow.validators.base import Context  # noqa: E402
from steadyflow.validators.inputs import prepare  # noqa: E402
from steadyflow.validators.runner import compile_check, run_check  # noqa: E402

EXAMPLE = ROOT / "configs" / "support_triage.yaml"


def _cases(rounds: int) -> tuple[Any, list[Any], list[dict[str, Any]]]:
    """The example's AI stage, its tickets (``rounds`` times) and an answer per ticket made from its text."""
    stage = load_pipeline(EXAMPLE).spec.stages[0]
    tickets = [d for d in read_documents(source_for(str(ROOT / "configs/data/tickets")), ROOT) if d.load_error is None]
    docs = [d for _ in range(rounds) for d in tickets]
    categories = ["billing", "technical", "account", "shipping"]
    outputs = [
        {"category": categories[i % 4], "priority": "medium", "summary": d.text[: 120 + 40 * (i % 3)]}
        for i, d in enumerate(docs)
    ]
    return stage, docs, outputs


def _cpu_ms(run: Any, count: int) -> float:
    started = time.process_time()
    run()
    return round((time.process_time() - started) * 1000 / count, 3)


def alone(stage: Any, docs: list[Any], outputs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU ms per document of each check, one document after another."""
    contexts = [Context(d.text, d.id, d.fields, {"id": "bench"}) for d in docs]
    result = {
        "redact_pii": _cpu_ms(lambda: [prepare(stage.input, d.text, d.id, d.fields, {}) for d in docs], len(docs))
    }
    for spec in stage.validate_:
        check = compile_check(spec)
        run_check(check, outputs[0], contexts[0])  # warm-up: loads the check's model
        result[spec.check] = _cpu_ms(
            lambda check=check: [run_check(check, o, c) for o, c in zip(outputs, contexts, strict=True)], len(docs)
        )
    return result


def batched(stage: Any, docs: list[Any], outputs: list[dict[str, Any]], size: int) -> dict[str, float]:
    """CPU ms per document of each check, in batches of ``size`` as a check worker runs them."""
    from steadyflow.validators.pool import CheckJob, PrepareJob, work
    from steadyflow.validators.runner import Segment, spec_key

    def batches(jobs: list[Any], specs: dict[str, Any]) -> None:
        for start in range(0, len(jobs), size):
            work(specs, jobs[start : start + size])

    prepares = [PrepareJob(stage.input, d.text, d.id, d.fields, {}) for d in docs]
    result = {"redact_pii": _cpu_ms(lambda: batches(prepares, {}), len(docs))}
    contexts = [Context(d.text, d.id, d.fields, {"id": "bench"}) for d in docs]
    for spec in stage.validate_:
        key = spec_key([spec])
        jobs = [CheckJob(key, Segment(o), c, 0) for o, c in zip(outputs, contexts, strict=True)]
        work({key: [spec]}, jobs[:1])  # warm-up
        result[spec.check] = _cpu_ms(lambda jobs=jobs, key=key, spec=spec: batches(jobs, {key: [spec]}), len(docs))
    return result


def main() -> None:
    """Measure and print the CPU cost per document of each check."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--alone", action="store_true", help="one at a time only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stage, docs, outputs = _cases(args.rounds)
    prepare(stage.input, "warm up, Jane Doe", "w", {}, {})
    result: dict[str, Any] = {"documents": len(docs), "alone_cpu_ms": alone(stage, docs, outputs)}
    if not args.alone:
        result["batch"] = args.batch
        result["batched_cpu_ms"] = batched(stage, docs, outputs, args.batch)
        result["ratio"] = {
            k: round(v / result["batched_cpu_ms"][k], 2)
            for k, v in result["alone_cpu_ms"].items()
            if k in result["batched_cpu_ms"]
        }
    result["total_alone_cpu_ms"] = round(sum(result["alone_cpu_ms"].values()), 2)
    if "batched_cpu_ms" in result:
        result["total_batched_cpu_ms"] = round(sum(result["batched_cpu_ms"].values()), 2)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
