"""run_dataset: every example processed through the real pipeline, with a bounded number of tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from steadyflow.api import Pipeline
from steadyflow.chaos.server import ChaosServer
from steadyflow.evals.dataset import Dataset, Example
from steadyflow.evals.runner import run_dataset
from steadyflow.stages.checks import load_checked


def test_a_large_dataset_runs_on_as_many_tasks_as_documents_in_flight(tmp_path: Path, chaos: ChaosServer) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(f"""
pipeline: p
models:
  m: {{provider: openai, base_url: "{chaos.base_url}", mode: json_schema, timeout_s: 5}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{{model: m, reasks: 0, retries: 0}}, {{default: {{category: billing}}}}]
""")
    examples = [Example(f"e{i}", {"id": f"e{i}", "text": "t"}, {"s": {"category": "billing"}}) for i in range(300)]
    tasks: list[int] = []

    async def main() -> int:
        pipeline = Pipeline(load_checked(file, []), [])
        try:
            evaluation = await run_dataset(
                pipeline, Dataset(tmp_path / "d.jsonl", examples), 4, lambda *_: tasks.append(len(asyncio.all_tasks()))
            )
        finally:
            await pipeline.aclose()
        return evaluation.documents

    assert asyncio.run(main()) == 300
    assert len(tasks) == 300 and max(tasks) <= 4 + 10  # the workers and the pipeline's own, not one per example
