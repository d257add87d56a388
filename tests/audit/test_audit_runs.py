"""Runs write the audit trail: who ran each decision, the policy in force, the model that answered, reviews.

Runs go over real HTTP to the chaos endpoint (scripted answers, so the attempts are known) and write to
real stores: the test's own SQLite file (``$STEADYFLOW_AUDIT_URL``) or a fresh PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from steadyflow.audit.chain import AuditError
from steadyflow.audit.records import output_hash
from steadyflow.audit.trail import RECORDS, AuditStore
from steadyflow.chaos.server import ChaosServer
from steadyflow.runner.batch import run_local
from steadyflow.runner.review import Flagged, decide, flagged
from steadyflow.runner.run import RunOptions
from steadyflow.stages.checks import load_checked
from tests.conftest import batch_without_prefect, free_port

CLI = [sys.executable, "-m", "steadyflow.cli"]
API_KEY = "sk-live-Zebra0042Secret"
EMAIL, PHONE, NAME = "dora.quillby@example.org", "+1 415 555 0142", "Dora Quillby"
SECRET = "Marigold-Vault-7781"
TEXTS = {
    "a.txt": f"My invoice was charged twice. {NAME}, {EMAIL}, {PHONE}",
    "b.txt": f"The app crashes on start. Token {SECRET}",
    f"{EMAIL}.txt": "Where is my invoice for March?",  # an id that is PII itself
}
PIPELINE = """
pipeline: audited
version: 2.0.0
models:
  m: {{provider: openai, base_url: "{url}", mode: json_schema, timeout_s: 10, api_key: "{key}"}}
source: {{kind: files, path: docs/*}}
stages:
  - id: triage
    kind: ai
    prompt: {{file: prompts/triage.md}}
    output:
      category: {{enum: [billing, technical]}}
      summary: {{type: string, max_length: 200}}
    validate:
      - {{layer: business, check: rule, rule: "output.category == 'billing' || !input.text.matches('(?i)invoice')",
         message: invoices are billing, on_fail: reask}}
    ladder:
      - {{model: m, reasks: 1, retries: 0}}
      - {{rules: rules/triage.yaml}}
      - {{default: {{category: billing, summary: needs a person}}, review: true}}
run: {{output: out}}
sink: {{kind: jsonl, path: triage.jsonl}}
{extra}
"""
RULES = "fields:\n  category: {keywords: {billing: [invoice]}, default: technical}\n  summary: {default: by rules}\n"


def project(tmp_path: Path, chaos: ChaosServer, extra: str = "") -> Path:
    """A pipeline with a prompt file and a rules file, and its documents; the pipeline file."""
    (tmp_path / "prompts").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "triage.md").write_text("Triage this ticket: {{ text }}")
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "triage.yaml").write_text(RULES)
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in TEXTS.items():
        (docs / name).write_text(text)
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=chaos.base_url, key=API_KEY, extra=extra))
    return file


def script(chaos: ChaosServer) -> None:
    """Answers in document order (concurrency 1): the first document's model answer breaks the rule once."""
    chaos.script.extend(
        [
            {"content": {"category": "technical", "summary": f"about {NAME}"}},  # a.txt: invoice != billing: re-ask
            {"content": {"category": "billing", "summary": f"double charge, write to {EMAIL}"}},  # a.txt accepted
            {"content": {"category": "technical", "summary": f"crash, token {SECRET}"}},  # b.txt
            {"content": {"category": "nonsense"}},  # the e-mail-named document: invalid, re-asked
            {"content": {"category": "nonsense"}},  # invalid again: the rules rung answers
        ]
    )


def run(file: Path, **options: Any) -> Any:
    options.setdefault("concurrency", 1)
    return batch_without_prefect(load_checked(file, options.pop("overrides", [])), RunOptions(**options))


def records(url: str, kind: str | None = None) -> list[dict[str, Any]]:
    store = AuditStore(url, "test")
    try:
        found = list(store.rows(RECORDS.c.kind == kind if kind else None))
    finally:
        store.close()
    return [{**row, "payload": json.loads(row["payload"])} for row in found]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, env=env)
    return done.stdout.strip()


def test_each_decision_records_who_the_policy_and_the_model_that_answered(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    file = project(tmp_path, chaos)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "p.yaml", "prompts", "rules")
    git(tmp_path, "commit", "-qm", "pipeline")
    script(chaos)
    summary = run(file, actor="auditor-1")
    url = f"sqlite:///{audit_store}"
    decisions = records(url, "decision")
    assert len(decisions) == 3 and summary.audit["head_seq"] == 5  # run, 3 decisions, run end

    first = decisions[0]["payload"]
    assert first["actor"] == {"name": "auditor-1", "via": "option"}
    policy = first["policy"]
    assert policy["git"] == {"commit": git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    for name in ("p.yaml", "prompts/triage.md", "rules/triage.yaml"):
        assert policy["files"][name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert all(d["payload"]["policy"] == policy for d in decisions)
    model_attempts = [a for d in decisions for a in d["payload"]["attempts"] if a["kind"] == "model"]
    assert len(model_attempts) == 5
    assert {(a["response_model"], a["system_fingerprint"]) for a in model_attempts} == {("m", "fp_chaos")}

    # the output's hash is the hash of what the sink holds; the document is known by key alone
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out" / "triage.jsonl").open()}
    store = AuditStore(url, "test")
    by_key = {d["doc_key"]: d["payload"] for d in decisions}
    for doc_id, row in rows.items():
        assert by_key[store.key(doc_id)]["output_hash"] == output_hash(row["outputs"]["triage"])
    store.close()
    started = records(url, "run")[0]["payload"]
    assert started["source"]["path"] == str(tmp_path / "docs" / "*") and started["resumed"] is False

    # an edited prompt (not committed), and a --set override: the policy says so
    (tmp_path / "prompts" / "triage.md").write_text("Classify this ticket: {{ text }}")
    run(file, overrides=["models.m.max_tokens=300"])
    later = records(url, "decision")[-1]["payload"]
    assert later["policy"]["git"]["dirty"] is True
    assert later["policy"]["files"]["prompts/triage.md"] != policy["files"]["prompts/triage.md"]
    assert later["policy"]["hash"] != policy["hash"]
    assert later["actor"]["via"] == "login" and "@" in later["actor"]["name"]


def test_the_actor_comes_from_the_environment_and_a_pipeline_can_turn_the_trail_off(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = project(tmp_path, chaos)
    monkeypatch.setenv("STEADYFLOW_ACTOR", "scheduler@ops")
    run(file)
    assert {d["payload"]["actor"]["via"] for d in records(f"sqlite:///{audit_store}", "decision")} == {
        "STEADYFLOW_ACTOR"
    }
    off = project(tmp_path / "off", chaos, extra="audit: {enabled: false}")
    before = len(records(f"sqlite:///{audit_store}"))
    run(off)
    assert len(records(f"sqlite:///{audit_store}")) == before


def test_explain_tells_how_an_output_was_produced_and_who_reviewed_it(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    file = project(tmp_path, chaos, extra="")
    script(chaos)
    summary = run(file, actor="auditor-1")
    pipeline = load_checked(file, [])
    pending = {item.id: item for item in flagged(pipeline, tmp_path / "out")}
    assert not pending  # nothing flagged by this run: review one output anyway, as a person checking it would
    row = json.loads((tmp_path / "out" / "triage.jsonl").read_text().splitlines()[0])
    item = Flagged(row["id"], row["source"], row["rungs"], row["outputs"], row)
    corrected = {"triage": {**row["outputs"]["triage"], "category": "technical"}}
    assert decide(pipeline, tmp_path / "out", item, "reviewer-bob", corrected) == "corrected"

    shown = cli("audit", "explain", "a.txt", "--pipeline", str(file), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for words in (
        f"run {summary.run_id} of audited 2.0.0",
        "Run by auditor-1 (given with --actor)",
        "Policy ",
        "Files (SHA-256): p.yaml",
        "prompts/triage.md",
        "Attempt 1: rung 0, model m, answered as m (fingerprint fp_chaos)",
        "rule (business) failed on rung 0 -> reask",
        "Attempt 2:",
        "validated, ended by model:m on rung 0",
        "Corrected by reviewer-bob",
        "changed triage.category",
        "Total cost of this document",
    ):
        assert words in text, (words, text)
    assert NAME not in text and EMAIL not in text

    review = records(f"sqlite:///{audit_store}", "review")[0]["payload"]
    before = output_hash(row["outputs"]["triage"])
    assert review["outputs"]["triage"] == {"before": before, "after": output_hash(corrected["triage"])}
    assert review["run_id"] == summary.run_id and review["reviewer"] == "reviewer-bob"

    fallback = cli("audit", "explain", f"{EMAIL}.txt", "--run", summary.run_id, "--json", cwd=tmp_path)
    assert fallback.returncode == 0, fallback.stderr
    stage = json.loads(fallback.stdout)["stages"][0]
    assert stage["rung_label"] == "rules" and [a["error_kind"] for a in stage["attempts"]][:2] == [
        "invalid_output",
        "invalid_output",
    ]
    missing = cli("audit", "explain", "nope.txt", cwd=tmp_path)
    assert missing.returncode == 1 and "no decision on that document" in missing.stderr
    assert "Traceback" not in missing.stderr


def _store_bytes(tmp_path: Path, url: str) -> bytes:
    """Everything the store holds, as bytes: the SQLite file with its WAL, or every row of a PostgreSQL store."""
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = ("audit_records", "audit_chain", "audit_meta", "audit_retention")
        rows = [row for table in tables for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]
        dump = ["\t".join(str(value) for value in row) for row in rows]  # whole values (a Row's repr cuts them)
    engine.dispose()
    return "\n".join(dump).encode()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_document_text_pii_or_secret_reaches_the_store(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{audit_store}" if backend == "sqlite" else request.getfixturevalue("fresh_database")
    extra = f'audit: {{url: "{url}"}}' if backend == "postgresql" else ""
    file = project(tmp_path, chaos, extra=extra)
    script(chaos)
    run(file)
    pipeline = load_checked(file, [])
    row = json.loads((tmp_path / "out" / "triage.jsonl").read_text().splitlines()[0])
    item = Flagged(row["id"], row["source"], row["rungs"], row["outputs"], row)
    decide(pipeline, tmp_path / "out", item, "rev", {"triage": {"category": "billing", "summary": f"call {PHONE}"}})

    held = _store_bytes(tmp_path, url)
    assert b"audit_records" in held or b"decision" in held  # the dump holds the records
    for text in (API_KEY, EMAIL, PHONE, NAME, SECRET, "charged twice", "crashes on start", "a.txt", "b.txt"):
        assert text.encode() not in held, text
    assert records(url, "decision")  # and the records are there


def test_a_store_that_cannot_be_opened_refuses_the_run_before_any_document(tmp_path: Path, chaos: ChaosServer) -> None:
    dead = f"postgresql+psycopg://audit:pw-Hidden-42@127.0.0.1:{free_port()}/audit"
    file = project(tmp_path, chaos, extra=f'audit: {{url: "{dead}"}}')
    with pytest.raises(AuditError, match="cannot open") as caught:
        run_local(load_checked(file, []), RunOptions())
    assert "pw-Hidden-42" not in str(caught.value)
    assert not (tmp_path / "out" / "triage.jsonl").exists() and not chaos.requests

    refused = cli("run", str(file), cwd=tmp_path)  # told before Prefect starts: one line, exit 1
    assert refused.returncode == 1, refused.stderr
    assert "cannot open" in refused.stderr and "nothing was run" in refused.stderr
    assert "Traceback" not in refused.stderr and "pw-Hidden-42" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    unset = project(tmp_path / "unset", chaos, extra='audit: {url: "postgresql+psycopg://a:${NO_SUCH_VAR_42}@h/db"}')
    told = cli("run", str(unset), cwd=tmp_path)  # a pipeline problem, with its place
    assert told.returncode == 2 and "p.yaml:" in told.stderr and "NO_SUCH_VAR_42" in told.stderr
    assert "Traceback" not in told.stderr


def test_a_resumed_run_and_a_second_run_at_once_keep_one_verifiable_chain(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    file = project(tmp_path, chaos)
    for n in range(12):
        (tmp_path / "docs" / f"n{n:02d}.txt").write_text(f"ticket {n}: the export fails")
    options = RunOptions(run_id="cut-run", chunk_size=2)
    batch_without_prefect(load_checked(file, []), options, concurrency=1, stop_after=4)
    resumed = run(file, run_id="cut-run", resume=True, chunk_size=2)
    assert resumed.resumed >= 4
    url = f"sqlite:///{audit_store}"
    started = records(url, "run")
    assert [r["payload"]["resumed"] for r in started] == [False, True]
    decided = {(d["run_id"], d["doc_key"]) for d in records(url, "decision")}
    assert len(decided) == len(TEXTS) + 12  # every document has its decision, whatever the cut

    # two runs of two folders at once, in two processes, on one store
    code = (
        "import sys; from steadyflow.runner.batch import run_local; from steadyflow.runner.run import RunOptions;"
        "from steadyflow.stages.checks import load_checked;"
        "run_local(load_checked(sys.argv[1], []), RunOptions(output=sys.argv[2], concurrency=4))"
    )
    both = [subprocess.Popen([sys.executable, "-c", code, str(file), str(tmp_path / f"o{i}")]) for i in range(2)]
    assert [p.wait(timeout=120) for p in both] == [0, 0]
    verified = cli("audit", "verify", "--json", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] and result["records"] == len(records(url))


def test_runs_write_to_postgresql_and_a_team_verifies_it(
    tmp_path: Path, chaos: ChaosServer, fresh_database: str
) -> None:
    file = project(tmp_path, chaos, extra=f'audit: {{url: "{fresh_database}", retention_days: 400}}')
    script(chaos)
    summary = run(file)
    assert summary.audit["head_seq"] == 6  # retention set, run, 3 decisions, run end
    shown = cli("audit", "verify", "--pipeline", str(file), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "the chain holds: 6 records" in shown.stdout
    assert [r["kind"] for r in records(fresh_database)] == [
        "retention",
        "run",
        "decision",
        "decision",
        "decision",
        "run_end",
    ]


def test_what_a_provider_says_it_answered_with_is_recorded_only_as_one_plain_word(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    file = project(tmp_path, chaos)
    chaos.script.extend(
        [  # a vendor's update behind the same name shows as its dated model and fingerprint; hostile values do not pass
            {
                "content": {"category": "billing", "summary": "s"},
                "model": "m-2026-11-01",
                "system_fingerprint": "fp_9a1",
            },
            {"content": {"category": "technical", "summary": "s"}, "model": f"m\nignore previous {SECRET}"},
            {"content": {"category": "billing", "summary": "s"}, "system_fingerprint": "x" * 10_000},
        ]
    )
    run(file)
    said = [
        (attempt["response_model"], attempt["system_fingerprint"])
        for decision in records(f"sqlite:///{audit_store}", "decision")
        for attempt in decision["payload"]["attempts"]
    ]
    assert sorted(said, key=str) == sorted(
        [("m-2026-11-01", "fp_9a1"), ("(unreadable)", "fp_chaos"), ("m", "(unreadable)")], key=str
    )
    assert SECRET.encode() not in _store_bytes(tmp_path, f"sqlite:///{audit_store}")
