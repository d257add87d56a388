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


def test_labels_no_answer_can_match_are_refused_before_any_call(tmp_path: Path) -> None:
    import pytest

    from steadyflow.evals.dataset import DatasetError
    from steadyflow.evals.runner import read_dataset

    file = tmp_path / "p.yaml"
    file.write_text("""
pipeline: p
models: {m: {provider: openai, base_url: "http://127.0.0.1:9/v1"}}
stages:
  - id: s
    kind: ai
    prompt: {template: "{{ text }}"}
    output: {category: {enum: [billing, technical]}, note: {type: string, optional: true}}
    ladder: [{model: m}]
""")
    pipeline = Pipeline(load_checked(file, []), [])
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"id": "a", "text": "x", "expected": {"category": "billing", "note": null}}\n'
        '{"id": "b", "text": "x", "expected": {"category": "biling"}}\n'
        '{"id": "c", "text": "x", "expected": {"category": 5}}\n'
    )
    with pytest.raises(DatasetError) as caught:
        read_dataset(pipeline, data)
    assert str(caught.value) == (
        f"{data}: labels no answer can match: b: s.category is \"biling\", not one of ['billing', 'technical']; "
        "c: s.category is 5, not one of ['billing', 'technical']"
    )
