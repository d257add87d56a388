"""`steadyflow diff`: what changed between two pipeline versions, files or versions recorded runs kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions
from steadyflow.spec.diff import diff
from steadyflow.spec.snapshot import snapshot
from steadyflow.stages.checks import load_checked

CLI = [sys.executable, "-m", "steadyflow.cli", "diff"]
BASE = """
pipeline: differ
version: 1.0.0
models:
  m: {provider: openai, base_url: "http://127.0.0.1:9/v1", temperature: 0.0}
source: {kind: files, path: docs/*}
stages:
  - id: s
    kind: ai
    prompt: {template: "Sort this ticket: {{ text }}"}
    output: {category: {enum: [billing, technical]}}
    validate:
      - {layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}
      - {layer: safety, check: format, field: category, max_chars: 20, on_fail: fix}
    ladder:
      - {model: m, reasks: 1}
      - {rules: rules.yaml}
      - {default: {category: billing}}
  - id: tidy
    kind: rules
    output: {team: {type: string, optional: true}}
    rules: {fields: {team: {keywords: {ops: [outage]}}}}
"""
RULES = "fields:\n  category:\n    keywords:\n      billing: [invoice]\n      technical: [error]\n"


def write(folder: Path, name: str, text: str = BASE, rules: str = RULES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(rules)
    path = folder / name
    path.write_text(text)
    return path


def changes(old: Path, new: Path) -> list[tuple[str, str]]:
    found = diff(snapshot(load_checked(old, [])), snapshot(load_checked(new, [])))
    return [(c.section, c.where) for c in found]


def test_the_same_pipeline_has_no_change_and_a_description_is_not_one(tmp_path: Path) -> None:
    old = write(tmp_path, "old.yaml")
    new = write(tmp_path, "new.yaml", BASE.replace("    kind: ai\n", "    kind: ai\n    description: words\n", 1))
    assert changes(old, new) == []


def test_each_kind_of_change_is_named_once(tmp_path: Path) -> None:
    old = write(tmp_path / "a", "p.yaml")
    edited = (
        BASE.replace("Sort this ticket", "Classify this ticket")
        .replace("temperature: 0.0", "temperature: 0.2")
        .replace("min: 0.8", "min: 0.9")
        .replace("[billing, technical]", "[billing, technical, account]")
        .replace("      - {default: {category: billing}}\n", "")
    )
    new = write(tmp_path / "b", "p.yaml", edited, RULES.replace("[invoice]", "[invoice, refund]"))
    found = diff(snapshot(load_checked(old, [])), snapshot(load_checked(new, [])))
    named = {(c.section, c.where) for c in found}
    assert ("model", "models.m.temperature") in named
    # the same rules file name, new content
    assert ("rules", "stages.s.ladder[1].rules.fields.category.keywords.billing") in named
    assert ("ladder", "stages.s.ladder[2]") in named
    assert ("output", "stages.s.output.properties.category.enum") in named
    checks = [c for c in found if c.section == "check"]
    assert [(c.old, c.new) for c in checks] == [(0.8, 0.9)]  # one edited check, not a cascade
    prompt = next(c for c in found if c.section == "prompt")
    assert prompt.old != prompt.new and f"--- prompt {prompt.old}" in prompt.unified
    assert "-Sort this ticket: {{ text }}\n+Classify this ticket: {{ text }}" in prompt.unified
    assert len(found) == 6


def test_reordered_checks_are_no_change(tmp_path: Path) -> None:
    lines = BASE.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "check: confidence" in line)
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    assert changes(write(tmp_path, "old.yaml"), write(tmp_path, "new.yaml", "".join(lines))) == []


def test_the_cli_compares_files_and_recorded_runs(tmp_path: Path) -> None:
    rules_only = "pipeline: tagger\nversion: 1.0.0\nsource: {kind: files, path: docs/*}\nstages:\n"
    rules_only += "  - {id: t, kind: rules, output: {team: {type: string, optional: true}},\n"
    rules_only += "     rules: {fields: {team: {keywords: {ops: [outage]}}}}}\nrun: {output: out}\n"
    old = write(tmp_path, "old.yaml", rules_only)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("an outage")
    run_id = run_local(load_checked(old, []), RunOptions()).run_id
    new = write(tmp_path, "new.yaml", rules_only.replace("[outage]", "[outage, down]"))

    both = subprocess.run([*CLI, str(old), str(new)], capture_output=True, text=True, timeout=60)
    assert both.returncode == 0 and both.stdout.splitlines()[-1] == "1 change (rules)"
    recorded = subprocess.run([*CLI, run_id, str(new), "--json"], capture_output=True, text=True, timeout=60)
    data = json.loads(recorded.stdout)
    assert [c["where"] for c in data["changes"]] == ["stages.t.rules.fields.team.keywords.ops"]
    same = subprocess.run([*CLI, "last", str(old)], capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and same.stdout.strip() == "no change that affects outputs"
    unknown = subprocess.run([*CLI, "nope", str(new)], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and f"no such run (newest: {run_id})" in unknown.stderr
    broken = write(tmp_path, "broken.yaml", "pipeline: x\nstages: [\n")
    invalid = subprocess.run([*CLI, str(broken), str(new)], capture_output=True, text=True, timeout=60)
    assert invalid.returncode == 2 and "broken.yaml:" in invalid.stderr and "Traceback" not in invalid.stderr
