"""`steadyflow diff OLD NEW`: files or recorded runs, grouped text or JSON, one-line errors, exit 0 when it worked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions
from steadyflow.stages.checks import load_checked

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "steadyflow.cli", "diff"]
AI = """
pipeline: sorter
version: 1.0.0
models:
  small: {provider: openai, base_url: "http://127.0.0.1:9/v1", model: m, temperature: 0.0}
stages:
  - id: sort
    kind: ai
    prompt: {template: "Sort this ticket:\\n{{ text }}\\n"}
    output: {category: {enum: [billing, technical]}}
    validate:
      - {layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}
    ladder:
      - {model: small, reasks: 1}
      - {rules: rules.yaml}
      - {default: {category: billing}}
"""
RULES = "fields:\n  category:\n    keywords: {billing: [invoice], technical: [error]}\n    default: billing\n"
# two stages whose ids are not in alphabetical order: a recorded snapshot keeps its keys sorted
TAGGER = """
pipeline: tagger
version: 1.0.0
stages:
  - id: triage
    kind: rules
    rules: {fields: {category: {keywords: {billing: [invoice], technical: [error]}, default: other}}}
    output: {category: {enum: [billing, technical, other]}}
  - id: archive
    kind: rules
    rules: {fields: {team: {keywords: {ops: [outage]}}}}
    output: {team: {type: string, optional: true}}
run: {output: out}
"""


def diff_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60)


def write(folder: Path, text: str, rules: str = RULES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(rules)
    (folder / "p.yaml").write_text(text)
    return folder / "p.yaml"


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str]:
    """A rules-only pipeline (no model) that ran once, in process; its file and run id (outputs in out/)."""
    file = write(tmp_path / "prod", TAGGER)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("an invoice, and an outage")
    options = RunOptions(input=str(docs), output=str(tmp_path / "prod" / "out"))
    return file, run_local(load_checked(file, []), options).run_id


def test_identical_files_show_no_change(tmp_path: Path) -> None:
    result = diff_cli(write(tmp_path / "a", AI), write(tmp_path / "b", AI))
    assert (result.returncode, result.stdout, result.stderr) == (0, "no change that affects outputs\n", "")


def test_changes_are_grouped_by_section_with_the_prompt_as_a_unified_diff(tmp_path: Path) -> None:
    edited = (
        AI.replace("Sort this ticket", "Classify this ticket")
        .replace("temperature: 0.0", "temperature: 0.2")
        .replace("min: 0.8", "min: 0.9")
        .replace("[billing, technical]}", "[billing, technical, account]}")
        .replace("      - {model: small, reasks: 1}\n", "      - {model: small, reasks: 1}\n      - {model: small}\n")
    )
    result = diff_cli(write(tmp_path / "a", AI), write(tmp_path / "b", edited, RULES.replace("[error]", "[bug]")))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^prompt:\n  stages\.sort\.prompt: ([0-9a-f]{12}) -> ([0-9a-f]{12})\n", out, re.M)
    old, new = re.findall(r"stages\.sort\.prompt: (\w+) -> (\w+)", out)[0]
    assert f"    --- prompt {old}\n    +++ prompt {new}\n" in out
    assert "    -Sort this ticket:\n    +Classify this ticket:\n" in out
    assert "model:\n  models.small.temperature: 0.0 -> 0.2\n" in out
    assert 'stages.sort.output.properties.category.enum: added "account"\n' in out
    assert 'stages.sort.ladder[2].rules.fields.category.keywords.technical: added "bug"; removed "error"\n' in out
    assert 'ladder:\n  stages.sort.ladder[1]: added {"model": "small", "reasks": 1, "retries": 1}\n' in out
    assert 'check:\n  stages.sort.validate[semantic:confidence:"category"].min: 0.8 -> 0.9\n' in out
    assert out.splitlines()[-1] == "6 changes (model, prompt, output, ladder, rules, check)"


def test_json_names_both_sides_with_their_hashes(tmp_path: Path) -> None:
    old, new = write(tmp_path / "a", AI), write(tmp_path / "b", AI.replace("temperature: 0.0", "temperature: 1.0"))
    result = diff_cli(old, new, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["old"]["ref"] == str(old) and data["new"]["ref"] == str(new)
    assert re.fullmatch(r"[0-9a-f]{16}", data["old"]["hash"]) and data["old"]["hash"] != data["new"]["hash"]
    assert data["changes"] == [
        {"section": "model", "where": "models.small.temperature", "old": 0.0, "new": 1.0, "unified": ""}
    ]


def test_a_broken_file_exits_2_with_its_position_and_no_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: x\nstages: [\n")
    result = diff_cli(broken, write(tmp_path / "ok", AI))
    assert result.returncode == 2 and result.stdout == ""
    assert re.match(r".*broken\.yaml:\d+:\d+: ", result.stderr) and "Traceback" not in result.stderr
    missing = diff_cli(tmp_path / "nope.yaml", tmp_path / "ok" / "p.yaml")
    assert missing.returncode == 2 and missing.stderr == f"{tmp_path / 'nope.yaml'}: no such pipeline file\n"


def test_a_recorded_run_against_its_file_and_against_an_edit(tmp_path: Path, recorded: tuple[Path, str]) -> None:
    file, run_id = recorded
    out = file.parent / "out"
    same = diff_cli(run_id, file)  # the folder is the file's output folder
    assert (same.returncode, same.stdout) == (0, "no change that affects outputs\n"), same.stderr
    edited = write(tmp_path / "candidate", TAGGER.replace("[outage]", "[outage, down]"))
    result = diff_cli(run_id, edited, "--output", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'rules:\n  stages.archive.rules.fields.team.keywords.ops: added "down"\n1 change (rules)\n'
    overridden = diff_cli("last", file, "--output", out, "--set", "version=1.1.0", "--json")
    assert [(c["where"], c["old"], c["new"]) for c in json.loads(overridden.stdout)["changes"]] == [
        ("version", "1.0.0", "1.1.0")
    ]


def test_an_unknown_run_id_exits_2_naming_the_runs_there(tmp_path: Path, recorded: tuple[Path, str]) -> None:
    file, run_id = recorded
    result = diff_cli("0123456789ab", file, "--output", file.parent / "out")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "run 0123456789ab: no such run" in result.stderr
    assert f"(newest: {run_id})" in result.stderr
    (tmp_path / "empty").mkdir()
    nothing = diff_cli("0123456789ab", file, "--output", tmp_path / "empty")
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
    assert "has no recorded runs" in nothing.stderr and "Traceback" not in nothing.stderr
    both_ids = diff_cli("0123456789ab", run_id)
    assert both_ids.returncode == 2 and "give --output" in both_ids.stderr
