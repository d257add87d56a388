"""`steadyflow review`: a person accepts or corrects what a run flagged; decisions recorded, outputs corrected."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from steadyflow.runner.run import RunOptions
from steadyflow.spec.loader import load_pipeline
from tests.conftest import batch_without_prefect

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = """
pipeline: reviewed
models:
  m: {{provider: openai, base_url: "{url}", mode: json_schema, timeout_s: 5}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    validate:
      - {{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: review}}
    ladder:
      - {{model: m, reasks: 0, retries: 0}}
      - {{default: {{category: billing}}, review: true}}
sink: {{kind: jsonl, path: out.jsonl}}
"""
SECRET = "Quillfeather-5521"


def _run(tmp_path: Path, chaos: ChaosServer) -> tuple[Path, Path]:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=chaos.base_url))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"d{i}.txt").write_text(f"ticket {i} from {SECRET}: my invoice is wrong")
    chaos.script.extend(
        [
            {"content": {"category": "billing"}, "logprob": -0.01},  # d0: sure, accepted
            {"content": {"category": "technical"}, "logprob": -1.0},  # d1: unsure (0.37), flagged
            {"content": {"category": "technical"}, "logprob": -2.0},  # d2: unsure, flagged
            {"content": {"category": "nonsense"}},  # d3: invalid, the default answers, flagged
        ]
    )
    out = tmp_path / "out"
    options = RunOptions(input=str(docs), output=str(out))
    batch_without_prefect(load_pipeline(file), options, concurrency=1)
    return file, out


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "steadyflow.cli", "review", *args]
    return subprocess.run(command, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120)


def test_flagged_documents_are_listed_decided_recorded_and_exported(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    listed = _cli("list", str(file), "--output", str(out), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["d1.txt", "d2.txt", "d3.txt"]

    # d1 accepted; d2 first corrected to a value outside the enum (refused, stays pending); then d3 corrected
    session = _cli(str(file), "--output", str(out), "--reviewer", "alice", stdin='a\nc\n"refund"\nc\n"technical"\n')
    assert session.returncode == 0, session.stderr
    assert "does not fit the schema" in session.stderr and "Traceback" not in session.stderr
    assert SECRET in session.stdout  # the reviewer sees the document
    rows = [json.loads(line) for line in (out / "reviewed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["outputs"]["s"]["category"], r["reviewed"]) for r in rows] == [
        ("d1.txt", "technical", {"by": "alice", "action": "accepted"}),
        ("d3.txt", "technical", {"by": "alice", "action": "corrected"}),
    ]
    with sqlite3.connect(out / "decisions.sqlite") as db:
        reviews = db.execute("SELECT reviewer, action, changed FROM reviews ORDER BY decided_at").fetchall()
        dump = "\n".join(db.iterdump())
    assert reviews == [("alice", "accepted", "[]"), ("alice", "corrected", '["s.category"]')]
    assert SECRET not in dump and "d1.txt" not in dump  # keys and field names, never text or ids

    again = _cli("list", str(file), "--output", str(out))
    assert again.stdout.split()[0] == "d2.txt" and "1 to review" in again.stderr

    dataset = tmp_path / "reviewed.jsonl"
    exported = _cli("export", str(file), "--output", str(out), "--to", str(dataset))
    assert exported.returncode == 0, exported.stderr
    examples = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert [(e["id"], e["expected"], SECRET in e["text"]) for e in examples] == [
        ("d1.txt", {"s": {"category": "technical"}}, True),
        ("d3.txt", {"s": {"category": "technical"}}, True),
    ]


def test_review_problems_are_one_line(tmp_path: Path, chaos: ChaosServer) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=chaos.base_url))
    missing = _cli("list", str(file), "--output", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1 and "no such file" in missing.stderr
    (tmp_path / "c.yaml").write_text(
        PIPELINE.format(url=chaos.base_url).replace("jsonl, path: out.jsonl", "csv, path: o.csv")
    )
    csv = _cli("list", str(tmp_path / "c.yaml"), "--output", str(tmp_path))
    assert csv.returncode == 2 and "reads JSONL sinks" in csv.stderr
    no_file = _cli("export")
    assert no_file.returncode == 2 and "give the pipeline file" in no_file.stderr


def test_a_documents_escape_sequences_never_reach_the_reviewers_terminal(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    # OSC 52 writes the terminal's clipboard, OSC 0 its title
    (tmp_path / "docs" / "d1.txt").write_text(f"{SECRET} \x1b]52;c;ZWNobyBwd25lZA==\x07 \x1b]0;PWNED\x07 \u202eevil")
    session = _cli(str(file), "--output", str(out), "--reviewer", "alice", stdin="s\nq\n")
    assert session.returncode == 0, session.stderr
    assert SECRET in session.stdout
    assert "\x1b" not in session.stdout and "\x07" not in session.stdout and "\u202e" not in session.stdout
    assert "\\x1b]52" in session.stdout  # shown, escaped


def test_a_correction_of_nan_or_infinity_is_refused_not_written(tmp_path: Path, chaos: ChaosServer) -> None:
    file = tmp_path / "p.yaml"
    spec = PIPELINE.format(url=chaos.base_url).replace("technical]}}", "technical]}, amount: {type: number}}")
    file.write_text(spec.replace("{category: billing}", "{category: billing, amount: 0}"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "d0.txt").write_text(f"ticket from {SECRET}")
    chaos.script.append({"content": {"category": "technical", "amount": 1.5}, "logprob": -1.0})
    out = tmp_path / "out"
    batch_without_prefect(load_pipeline(file), RunOptions(input=str(docs), output=str(out)), concurrency=1)
    for bad in ("NaN", "Infinity", "-Infinity"):
        session = _cli(str(file), "--output", str(out), "--reviewer", "alice", stdin=f'c\n"billing"\n{bad}\n')
        assert session.returncode == 0 and "Traceback" not in session.stderr
        assert "does not fit the schema" in session.stderr
    assert not (out / "reviewed.jsonl").exists()
    session = _cli(str(file), "--output", str(out), "--reviewer", "alice", stdin='c\n"billing"\n2\n')
    assert json.loads((out / "reviewed.jsonl").read_text())["outputs"] == {"s": {"category": "billing", "amount": 2}}


def test_a_reviewer_name_with_control_characters_is_refused(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    session = _cli(str(file), "--output", str(out), "--reviewer", "alice\nbob", stdin="a\nq\n")
    assert "control characters" in session.stderr and "Traceback" not in session.stderr
    assert not (out / "reviewed.jsonl").exists()


def test_export_never_overwrites_the_runs_own_files(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    assert _cli(str(file), "--output", str(out), "--reviewer", "alice", stdin="a\nq\n").returncode == 0
    before = {name: (out / name).read_bytes() for name in ("reviewed.jsonl", "out.jsonl", "decisions.sqlite")}
    for name in before:
        exported = _cli("export", str(file), "--output", str(out), "--to", str(out / name))
        assert exported.returncode == 2 and len(exported.stderr.splitlines()) == 1, exported.stderr
        assert "export elsewhere" in exported.stderr
    link = tmp_path / "link.jsonl"
    link.symlink_to(out / "reviewed.jsonl")
    assert _cli("export", str(file), "--output", str(out), "--to", str(link)).returncode == 2
    assert {name: (out / name).read_bytes() for name in before} == before


def test_rows_that_are_not_sink_rows_are_one_line_with_their_line(tmp_path: Path, chaos: ChaosServer) -> None:
    file, out = _run(tmp_path, chaos)
    sink = out / "out.jsonl"
    good = sink.read_text()
    for bad in ({"outputs": [1, 2]}, {"rungs": "abc"}, {"outputs": {"s": "x"}}, {"source": 5}):
        row = {"id": "x1", "source": str(tmp_path / "docs" / "d1.txt"), "review": True, "outputs": {"s": {}}, **bad}
        sink.write_text(good + json.dumps(row) + "\n")
        listed = _cli("list", str(file), "--output", str(out))
        assert listed.returncode == 2 and len(listed.stderr.splitlines()) == 1, listed.stderr
        assert f"{sink}:5: not a row" in listed.stderr
    sink.write_text(good)
    reviewed = out / "reviewed.jsonl"
    source = str(tmp_path / "docs" / "d1.txt")
    for row in ({"id": "d1.txt", "source": source}, {"id": "d1.txt", "source": source, "reviewed": "x", "outputs": {}}):
        reviewed.write_text(json.dumps(row) + "\n")
        exported = _cli("export", str(file), "--output", str(out), "--to", str(tmp_path / "d.jsonl"))
        assert exported.returncode in (0, 2) and "internal error" not in exported.stderr, exported.stderr
        assert len(exported.stderr.splitlines()) <= 1


def test_a_document_two_reviewers_listed_is_decided_once(tmp_path: Path, chaos: ChaosServer) -> None:

    from steadyflow.runner.review import ReviewError, decide, flagged

    file, out = _run(tmp_path, chaos)
    pipeline = load_pipeline(file)
    mine, theirs = flagged(pipeline, out), flagged(pipeline, out)  # both listed before either decided
    assert decide(pipeline, out, mine[0], "alice", None) == "accepted"
    with pytest.raises(ReviewError, match=r"d1\.txt: already accepted by alice at \d\d:\d\d:\d\d"):
        decide(pipeline, out, theirs[0], "bob", {"s": {"category": "billing"}})
    rows = (out / "reviewed.jsonl").read_text().splitlines()
    assert len(rows) == 1 and '"by": "alice"' in rows[0]
    assert [item.id for item in flagged(pipeline, out)] == ["d2.txt", "d3.txt"]
