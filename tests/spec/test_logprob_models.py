"""Which models must return log-probabilities: a local server keeps every token's logits only for those."""

from __future__ import annotations

from pathlib import Path

from steadyflow.spec.loader import load_pipeline

PIPELINE = """
pipeline: p
models:
  a: {provider: local}
  b: {provider: local}
  c: {provider: local, logprobs: true}
stages:
  - id: first
    kind: ai
    prompt: {template: "{{ text }}"}
    output: {category: {enum: [x, y]}}
    validate: [CHECKS]
    ladder: [{model: a}, {model: b}]
  - id: second
    kind: ai
    prompt: {template: "{{ text }}"}
    output: {category: {enum: [x, y]}}
    ladder: [{model: b}]
"""


def test_models_of_a_stage_with_a_confidence_check_and_models_that_ask_need_log_probabilities(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.replace("CHECKS", "{layer: semantic, check: confidence, field: category}"))
    assert load_pipeline(file).spec.logprob_models() == {"a", "b", "c"}
    file.write_text(PIPELINE.replace("CHECKS", ""))
    assert load_pipeline(file).spec.logprob_models() == {"c"}
