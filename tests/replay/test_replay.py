"""`steadyflow replay` and `run --shadow` end to end: runs recorded over real HTTP, replayed through candidates.

The chaos endpoint answers as a pure function of the prompt it is sent: the same prompt gives the
same answer, an edited prompt a different one. So a change that leaves prompts alone must replay
unchanged, and a prompt edit must show up as changed categories.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from steadyflow.audit.ledger import RunLedger
from steadyflow.chaos.server import ChaosServer
from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions
from steadyflow.stages.checks import load_checked

CLI = [sys.executable, "-m", "steadyflow.cli"]
TEXTS = [
    "I was charged twice for my March invoice",
    "The app crashes every time I open settings",
    "Please reset my password, the login fails",
    "Where is my parcel? Tracking says delayed",
    "Refund the duplicate payment on my card",
    "Export to CSV gives error 500 since Monday",
    "I cannot change the e-mail address on my profile",
    "The courier left my package at the wrong address",
]
SECRET = "Quillfeather-7731"  # in one document: must never reach a record


def write_pipeline(path: Path, base_url: str, prompt: str = "Triage this ticket: {{ text }}", extra: str = "") -> Path:
    path.write_text(f"""
pipeline: replayed
version: 1.0.0
models:
  m: {{provider: openai, base_url: "{base_url}", mode: json_schema, timeout_s: 30{extra}}}
source: {{kind: files, path: docs/*}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "{prompt}"}}
    output:
      category: {{enum: [billing, technical, account, shipping]}}
      summary: {{type: string, max_length: 80}}
    ladder: [{{model: m, reasks: 0, retries: 0}}]
run: {{output: out}}
sink: {{kind: jsonl, path: triage.jsonl}}
""")
    return path


def record(tmp_path: Path, chaos: ChaosServer, **options: Any) -> tuple[Path, str]:
    """A run of the production pipeline over the documents; (pipeline file, run id)."""
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for number, text in enumerate(TEXTS, 1):
        (docs / f"t{number}.txt").write_text(text + (f" Signed {SECRET}." if number == 3 else ""))
    production = write_pipeline(tmp_path / "production.yaml", chaos.base_url)
    summary = run_local(load_checked(production, []), RunOptions(**options))
    assert summary.outputs == len(TEXTS)
    return production, summary.run_id


def replay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "replay", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_an_innocuous_change_passes_and_a_prompt_change_is_caught(tmp_path: Path, chaos: ChaosServer) -> None:
    _, run_id = record(tmp_path, chaos)
    # a larger max_tokens: the prompts are the same, so are the answers
    same = write_pipeline(tmp_path / "same.yaml", chaos.base_url, extra=", max_tokens: 400")
    passed = replay(run_id, "--pipeline", str(same), "--fail-on", "changed:category=0", "--json", cwd=tmp_path)
    assert passed.returncode == 0, passed.stderr
    data = json.loads(passed.stdout)
    assert data["documents"] == len(TEXTS) and data["failed"] == []
    assert data["fields"]["triage.category"]["changed"] == 0 and data["fields"]["triage.summary"]["changed"] == 0

    edited = write_pipeline(tmp_path / "edited.yaml", chaos.base_url, prompt="Classify this support ticket: {{ text }}")
    report = tmp_path / "replay.md"
    caught = replay(
        "last", "--pipeline", str(edited), "--fail-on", "changed:category=0.1", "--report", str(report), cwd=tmp_path
    )
    assert caught.returncode == 1, caught.stderr
    assert "replay failed: changed:category=0.1: measured" in caught.stderr and "Traceback" not in caught.stderr
    assert "triage.category:" in caught.stdout and " -> " in caught.stdout  # transitions, e.g. billing -> account
    page = report.read_text()
    assert "| triage.category |" in page and "Gates failed" in page
    assert SECRET not in page and SECRET not in caught.stdout
    for text in TEXTS:  # neither document text nor output text in the report
        assert text not in page


def test_changed_and_missing_inputs_are_listed_and_never_used(tmp_path: Path, chaos: ChaosServer) -> None:
    production, run_id = record(tmp_path, chaos)
    (tmp_path / "docs" / "t2.txt").write_text("The app crashes every time I open settings. Also billing.")
    (tmp_path / "docs" / "t5.txt").unlink()
    result = replay(run_id, "--pipeline", str(production), "--json", "--fail-on", "inputs=0", cwd=tmp_path)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["inputs"]["changed"] == ["t2.txt"]
    assert len(data["inputs"]["missing"]) == 1 and data["inputs"]["missing"][0].endswith("(file)")
    assert data["documents"] == len(TEXTS) - 2  # the two were not replayed
    assert data["fields"]["triage.category"]["changed"] == 0
    assert "inputs=0: measured 0.25" in result.stderr


def test_a_shadow_run_leaves_the_sink_identical_and_replay_reads_it(tmp_path: Path, chaos: ChaosServer) -> None:
    production, plain_id = record(tmp_path, chaos, output=str(tmp_path / "plain"))
    candidate = write_pipeline(tmp_path / "candidate.yaml", chaos.base_url, prompt="Classify: {{ text }}")
    options = RunOptions(output=str(tmp_path / "shadowed"), shadow=candidate, shadow_share=1.0)
    summary = run_local(load_checked(production, []), options)
    plain, shadowed = tmp_path / "plain" / "triage.jsonl", tmp_path / "shadowed" / "triage.jsonl"
    assert plain.read_bytes() == shadowed.read_bytes()  # only production's outputs reach the sink
    assert any(note.startswith(f"shadow: {len(TEXTS)} documents") for note in summary.notes)
    rows = (tmp_path / "shadowed" / "shadow" / f"{summary.run_id}.jsonl").read_text().splitlines()
    assert len(rows) == len(TEXTS)

    result = replay(summary.run_id, "--shadow", "--output", str(tmp_path / "shadowed"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["documents"] == len(TEXTS) and data["fields"]["triage.category"]["changed"] > 0
    gated = replay(
        summary.run_id, "--shadow", "-o", str(tmp_path / "shadowed"), "--fail-on", "changed:category=0", cwd=tmp_path
    )
    assert gated.returncode == 1
    none = replay(plain_id, "--shadow", "--output", str(tmp_path / "plain"), cwd=tmp_path)
    assert none.returncode == 2 and "no shadow store" in none.stderr


def test_records_keep_what_replay_needs_and_no_text(tmp_path: Path, chaos: ChaosServer) -> None:
    _, run_id = record(tmp_path, chaos)
    out = tmp_path / "out"
    ledger = RunLedger(out / "runs.sqlite", readonly=True)
    kept = ledger.snapshot(run_id)
    assert kept is not None
    version = kept["stages"]["triage"]["prompt"]["version"]
    prompt = ledger.prompt(version[:6])
    assert prompt is not None and prompt["template"] == "Triage this ticket: {{ text }}"
    assert json.loads(ledger.run_info(run_id)["source"])["path"] == str(tmp_path / "docs" / "*")
    ledger.close()
    shown = subprocess.run([*CLI, "prompt", version[:6], "--output", str(out)], capture_output=True, text=True)
    assert shown.returncode == 0 and f"prompt {version}" in shown.stdout
    assert "Triage this ticket: {{ text }}" in shown.stdout
    unknown = subprocess.run([*CLI, "prompt", "ffff", "--output", str(out)], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no single prompt ffff" in unknown.stderr
    with sqlite3.connect(out / "decisions.sqlite") as db:
        rows = db.execute("SELECT source_ref, document_hash, outputs FROM decisions").fetchall()
        dump = "\n".join(db.iterdump())
    assert {ref for ref, _, _ in rows} == {"file"} and all(len(digest) == 64 for _, digest, _ in rows)
    fingerprints = [json.loads(outputs) for _, _, outputs in rows]
    assert all(set(f["category"]) == {"value"} and set(f["summary"]) == {"digest", "length"} for f in fingerprints)
    assert SECRET not in dump and "t3.txt" not in dump  # no text, no id, no file name


def test_accuracy_of_both_against_labels_and_a_drop_gate(tmp_path: Path, chaos: ChaosServer) -> None:
    _, run_id = record(tmp_path, chaos)
    answers = {row["id"]: row["outputs"]["triage"]["category"] for row in map(json.loads, _lines(tmp_path))}
    labels = tmp_path / "labels.jsonl"  # the recorded answers as labels: recorded accuracy is 100%
    labels.write_text(
        "".join(json.dumps({"id": i, "text": "-", "expected": {"category": c}}) + "\n" for i, c in answers.items())
    )
    edited = write_pipeline(tmp_path / "edited.yaml", chaos.base_url, prompt="Sort this: {{ text }}")
    args = ["--pipeline", str(edited), "--dataset", str(labels), "--json", "--fail-on", "accuracy_drop:category=0.05"]
    result = replay(run_id, *args, cwd=tmp_path)
    data = json.loads(result.stdout)
    accuracy = data["accuracy"]["triage.category"]
    assert accuracy["recorded"] == 1.0 and accuracy["scored"] == len(TEXTS)
    assert accuracy["candidate"] < 1.0 and result.returncode == 1
    unlabelled = replay(run_id, "--pipeline", str(edited), "--fail-on", "accuracy_drop:category=0.05", cwd=tmp_path)
    assert unlabelled.returncode == 1 and "cannot be measured" in unlabelled.stderr


def test_what_cannot_be_replayed_is_one_line_and_exit_2(tmp_path: Path, chaos: ChaosServer) -> None:
    production, _ = record(tmp_path, chaos)
    unknown = replay("0000deadbeef", "--pipeline", str(production), cwd=tmp_path)
    assert unknown.returncode == 2 and "no run 0000deadbeef (newest:" in unknown.stderr
    bad = replay("last", "--pipeline", str(production), "--fail-on", "changed=0.1", cwd=tmp_path)
    assert bad.returncode == 2 and "changed needs a field" in bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: x\nstages: [\n")
    invalid = replay("last", "--pipeline", str(broken), cwd=tmp_path)
    assert invalid.returncode == 2 and "broken.yaml:" in invalid.stderr and "Traceback" not in invalid.stderr


def _lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "triage.jsonl").read_text().splitlines()
