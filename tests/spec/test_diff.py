"""Two pipeline snapshots compared: each kind of edit reads as one change, where it happened, both values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steadyflow.spec.diff import Change, diff
from steadyflow.spec.snapshot import snapshot
from steadyflow.stages.checks import load_checked

PIPELINE = """
pipeline: triage
version: 1.0.0
models:
  small: {provider: openai, base_url: "http://127.0.0.1:9/v1", model: m, temperature: 0.0}
stages:
  - id: triage
    kind: ai
    prompt:
      system: "You sort support tickets.\\nAnswer with JSON."
      template: "Sort this ticket:\\n{{ text }}\\n"
    output:
      category: {enum: [billing, technical]}
      summary: {type: string, max_length: 200}
    validate:
      - {layer: safety, check: format, field: summary, max_chars: 200, on_fail: fix}
      - {layer: safety, check: format, field: summary, single_line: true, on_fail: fix}
      - {layer: business, check: rule, rule: "output.summary.size() > 0", on_fail: reask}
      - {layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}
    ladder:
      - {model: small, reasks: 1}
      - {rules: rules/triage.yaml}
      - {default: {category: billing, summary: needs a person}}
  - id: archive
    kind: rules
    rules: {fields: {team: {keywords: {ops: [outage]}}}}
    output: {team: {type: string, optional: true}}
"""
RULES = """fields:
  category:
    keywords:
      billing: [invoice, refund]
      technical: [error, crash]
    default: billing
  summary: {regex: '(\\S[^\\n]{4,100})', default: a ticket}
"""


def load(folder: Path, text: str = PIPELINE, rules: str = RULES) -> dict[str, Any]:
    """The snapshot of a pipeline written to ``folder`` with its rules file."""
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "rules" / "triage.yaml").write_text(rules)
    (folder / "p.yaml").write_text(text)
    return snapshot(load_checked(folder / "p.yaml", []))


def changes(tmp_path: Path, text: str = PIPELINE, rules: str = RULES) -> list[Change]:
    """The changes from the base pipeline to ``text`` (and ``rules``), each in its own folder."""
    return diff(load(tmp_path / "old"), load(tmp_path / "new", text, rules))


def test_identical_pipelines_have_no_change_even_against_a_recorded_snapshot(tmp_path: Path) -> None:
    assert changes(tmp_path) == []
    current = load(tmp_path / "old")
    recorded = json.loads(json.dumps(current, sort_keys=True))  # how the run ledger stores it: keys sorted
    assert list(recorded["stages"]) != list(current["stages"])  # 'archive' comes after 'triage' in the file
    assert diff(recorded, current) == []
    assert diff(current, recorded) == []


def test_a_prompt_edit_is_one_change_with_both_versions_and_a_unified_diff(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("Sort this ticket:", "Classify this ticket:"))
    assert [(c.section, c.where) for c in found] == [("prompt", "stages.triage.prompt")]
    prompt = found[0]
    assert len(prompt.old) == len(prompt.new) == 12 and prompt.old != prompt.new
    assert f"--- prompt {prompt.old}\n+++ prompt {prompt.new}\n" in prompt.unified
    assert "-Sort this ticket:\n+Classify this ticket:\n" in prompt.unified


def test_a_system_prompt_of_several_lines_is_compared_line_by_line(tmp_path: Path) -> None:
    (prompt,) = changes(tmp_path, PIPELINE.replace("Answer with JSON.", "Answer with JSON only."))
    assert " [system] You sort support tickets.\n" in prompt.unified  # the unchanged line is context
    assert "-[system] Answer with JSON.\n+[system] Answer with JSON only.\n" in prompt.unified


def test_a_model_temperature_change_names_the_parameter(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("temperature: 0.0", "temperature: 0.2"))
    assert [(c.section, c.where, c.old, c.new) for c in found] == [("model", "models.small.temperature", 0.0, 0.2)]


def test_a_rung_inserted_into_the_ladder_is_that_rung_alone(tmp_path: Path) -> None:
    edited = PIPELINE.replace(
        "      - {rules: rules/triage.yaml}\n",
        "      - {rules: rules/triage.yaml}\n      - {model: small, reasks: 3}\n",
    )
    found = changes(tmp_path, edited)
    assert [(c.section, c.where, c.old) for c in found] == [("ladder", "stages.triage.ladder[2]", None)]
    assert found[0].new == {"model": "small", "reasks": 3, "retries": 1, "vote": None, "hedge": None}


def test_a_rung_inserted_before_an_edited_rules_rung_reads_as_those_two(tmp_path: Path) -> None:
    edited = PIPELINE.replace(
        "      - {rules: rules/triage.yaml}\n", "      - {model: small}\n      - {rules: rules/triage.yaml}\n"
    )
    found = changes(tmp_path, edited, RULES.replace("default: a ticket", "default: no summary"))
    assert [(c.section, c.where, c.old, c.new) for c in found] == [
        (
            "ladder",
            "stages.triage.ladder[1]",
            None,
            {"model": "small", "reasks": 1, "retries": 1, "vote": None, "hedge": None},
        ),
        ("rules", "stages.triage.ladder[2].rules.fields.summary.default", "a ticket", "no summary"),
    ]


def test_a_rung_of_another_kind_is_one_change(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("{rules: rules/triage.yaml}", "{model: small, reasks: 0}"))
    assert [(c.section, c.where) for c in found] == [("ladder", "stages.triage.ladder[1]")]
    assert "rules" in found[0].old and found[0].new["model"] == "small"


def test_an_edited_check_threshold_is_one_change_not_a_cascade(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("min: 0.8", "min: 0.9"))
    assert [(c.section, c.old, c.new) for c in found] == [("check", 0.8, 0.9)]
    assert found[0].where == 'stages.triage.validate[semantic:confidence:"category"].min'


def test_checks_sharing_a_key_are_each_compared(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("single_line: true", "single_line: false"))
    assert [(c.section, c.where, c.old, c.new) for c in found] == [
        ("check", 'stages.triage.validate[safety:format:"summary"#2].single_line', True, False)
    ]
    first = changes(tmp_path / "first", PIPELINE.replace("max_chars: 200", "max_chars: 100"))
    assert [(c.old, c.new) for c in first] == [(200, 100)]


def test_an_edited_rule_is_one_change_and_reordered_checks_are_none(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("size() > 0", "size() > 3"))
    assert [(c.section, c.old, c.new) for c in found] == [
        ("check", "output.summary.size() > 0", "output.summary.size() > 3")
    ]
    lines = PIPELINE.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "max_chars: 200" in line)
    lines[first], lines[first + 3] = lines[first + 3], lines[first]
    assert changes(tmp_path / "reordered", "".join(lines)) == []


def test_an_enum_value_added_is_an_output_change(tmp_path: Path) -> None:
    found = changes(tmp_path, PIPELINE.replace("[billing, technical]}", "[billing, technical, account]}"))
    assert [(c.section, c.where) for c in found] == [("output", "stages.triage.output.properties.category.enum")]
    assert (found[0].old, found[0].new) == (["billing", "technical"], ["billing", "technical", "account"])


def test_a_rules_file_edited_under_the_same_name_is_a_rules_change(tmp_path: Path) -> None:
    found = changes(tmp_path, rules=RULES.replace("[invoice, refund]", "[invoice, refund, charged]"))
    assert [(c.section, c.where) for c in found] == [
        ("rules", "stages.triage.ladder[1].rules.fields.category.keywords.billing")
    ]
    assert found[0].new == ["invoice", "refund", "charged"]


def test_stages_added_or_removed_and_the_version_are_changes(tmp_path: Path) -> None:
    without = PIPELINE[: PIPELINE.index("  - id: archive")].replace("version: 1.0.0", "version: 1.1.0")
    found = changes(tmp_path, without)
    assert [(c.section, c.where, c.new) for c in found] == [
        ("pipeline", "version", "1.1.0"),
        ("stage", "stages.archive", None),
    ]
    assert found[1].old["kind"] == "rules"


def test_the_order_of_changes_is_stable(tmp_path: Path) -> None:
    edited = PIPELINE.replace("temperature: 0.0", "temperature: 0.5").replace("min: 0.8", "min: 0.7")
    edited = edited.replace("Sort this", "Route this").replace("reasks: 1", "reasks: 2")
    old, new = load(tmp_path / "old"), load(tmp_path / "new", edited)
    first = diff(old, new)
    assert [c.section for c in first] == ["model", "prompt", "ladder", "check"]
    assert diff(json.loads(json.dumps(old, sort_keys=True)), new) == first
