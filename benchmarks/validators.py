"""Per-document overhead of each validator layer on the example tickets.

Runs ``configs/support_triage.yaml`` over the example's 40 valid tickets
(repeated ``--rounds`` times) against steadyflow's chaos endpoint with no
faults and no added latency, so that what is measured is the sandwich, not a
model. Two variants side by side in one run, after a warm-up document each
(presidio's spaCy model and the ONNX embedder load once per process):

- bare: the pipeline with its ``validate:`` list emptied, injection off, no redaction;
- checked: the pipeline as written (input injection scan and PII redaction,
  business rule, PII/secrets/format guards, embedding similarity).

Prints p50/p95 of each check's own time (from the verdicts' ``duration_ms``),
the per-layer total per document, and the checked/bare ratio of per-document
engine time.

    .venv/bin/python benchmarks/validators.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyflow.chaos.server import ChaosConfig, ChaosServer  # noqa: E402
from steadyflow.io.sources import read_documents, source_for  # noqa: E402
from steadyflow.spec import load_pipeline  # noqa: E402
from steadyflow.stages.document import Document  # noqa: E402
from steadyflow.stages.engine import Engine  # noqa: E402

BARE = ["stages.triage.validate=[]", "stages.triage.input.injection=off", "stages.triage.input.redact_pii=null"]


def _pct(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else (values[0] if values else 0.0)
    )


def _docs(rounds: int) -> list[Document]:
    tickets = [d for d in read_documents(source_for(str(ROOT / "configs/data/tickets")), ROOT) if d.load_error is None]
    return [Document(f"{d.id}#{r}", d.text, d.source, dict(d.fields)) for r in range(rounds) for d in tickets]


def _measure(base_url: str, overrides: list[str], docs: list[Document]) -> tuple[list[float], list[list]]:
    pipeline = load_pipeline(
        ROOT / "configs/support_triage.yaml",
        ["models.small.provider=openai", f"models.small.base_url={base_url}", *overrides],
    )

    async def go() -> tuple[list[float], list[list]]:
        engine = Engine.create(pipeline, "bench", concurrency=1)
        try:
            await engine.run_stage("triage", [Document("warm", docs[0].text, "warm")])
            times, verdicts = [], []
            for original in docs:  # one at a time: per-document time without queueing
                doc = Document(original.id, original.text, original.source, dict(original.fields))
                started = time.perf_counter()
                [record] = await engine.run_stage("triage", [doc])
                times.append((time.perf_counter() - started) * 1000)
                verdicts.append(record.verdicts)
            return times, verdicts
        finally:
            await engine.aclose()

    return asyncio.run(go())


def main() -> None:
    """Measure both variants and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    docs = _docs(args.rounds)
    server = ChaosServer(ChaosConfig(seed=5)).start()
    try:
        bare_ms, _ = _measure(server.base_url, BARE, docs)
        checked_ms, verdicts = _measure(server.base_url, [], docs)
    finally:
        server.stop()
    by_check: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_layer: dict[str, list[float]] = defaultdict(list)
    for record in verdicts:
        per_layer: dict[str, float] = defaultdict(float)
        for v in record:
            by_check[(v.layer, v.check)].append(v.duration_ms)
            per_layer[v.layer] += v.duration_ms
        for layer, total in per_layer.items():
            by_layer[layer].append(total)
    print(f"{len(docs)} documents, one at a time, chaos endpoint without faults or latency\n")
    print(f"{'layer':11} {'check':12} {'n':>5} {'p50 ms':>8} {'p95 ms':>8}")
    for (layer, check), values in sorted(by_check.items()):
        print(f"{layer:11} {check:12} {len(values):>5} {_pct(values, 50):>8.2f} {_pct(values, 95):>8.2f}")
    print(f"\n{'layer (per document)':32} {'p50 ms':>8} {'p95 ms':>8}")
    for layer, values in sorted(by_layer.items()):
        print(f"{layer:32} {_pct(values, 50):>8.2f} {_pct(values, 95):>8.2f}")
    print(f"\n{'engine time per document':32} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"{'bare (no checks)':32} {_pct(bare_ms, 50):>8.2f} {_pct(bare_ms, 95):>8.2f}")
    print(f"{'checked (as written)':32} {_pct(checked_ms, 50):>8.2f} {_pct(checked_ms, 95):>8.2f}")
    print(
        f"checked/bare ratio (p50): {_pct(checked_ms, 50) / _pct(bare_ms, 50):.2f}x; "
        f"added p50 {_pct(checked_ms, 50) - _pct(bare_ms, 50):.1f} ms per document"
    )


if __name__ == "__main__":
    main()
