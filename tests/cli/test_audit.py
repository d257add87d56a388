"""`steadyflow audit verify|explain|export|purge|keygen` as a compliance officer runs them, on a real run's trail."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.chaos.server import ChaosServer
from tests.audit.test_audit_runs import project, run, script

CLI = [sys.executable, "-m", "steadyflow.cli", "audit"]


def audit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ, **(env or {})}
    )


def one_line(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_verify_holds_on_a_run_and_names_the_record_an_edit_broke(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    script(chaos)
    run(project(tmp_path, chaos))
    held = audit("verify", cwd=tmp_path)
    assert held.returncode == 0, held.stderr
    assert "the chain holds: 5 records" in held.stdout

    with sqlite3.connect(audit_store) as db:  # a decision's outcome rewritten after the fact
        db.execute(
            'UPDATE audit_records SET payload = replace(payload, \'"status":"\', \'"status":"re\') WHERE seq = 3'
        )
    broken = audit("verify", cwd=tmp_path)
    assert broken.returncode == 1 and "BROKEN at record 3" in broken.stderr
    one_line(broken)
    assert json.loads(audit("verify", "--json", cwd=tmp_path).stdout)["broken"].startswith("record 3:")

    nowhere = audit("verify", "--store", f"sqlite:///{tmp_path / 'none.sqlite'}", cwd=tmp_path)
    assert nowhere.returncode == 2 and "no audit store at" in nowhere.stderr
    one_line(nowhere)
    assert not (tmp_path / "none.sqlite").exists()  # looking never creates a store


def test_a_signed_trail_verifies_with_its_key_only(tmp_path: Path, chaos: ChaosServer, audit_store: Path) -> None:
    made = audit("keygen", str(tmp_path / "trail.pem"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "trail.pem").stat().st_mode & 0o777 == 0o600
    again = audit("keygen", str(tmp_path / "trail.pem"), cwd=tmp_path)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    audit("keygen", str(tmp_path / "other.pem"), cwd=tmp_path)

    import os

    os.environ["STEADYFLOW_AUDIT_SIGNING_KEY"] = str(tmp_path / "trail.pem")
    try:
        run(project(tmp_path, chaos))
    finally:
        del os.environ["STEADYFLOW_AUDIT_SIGNING_KEY"]
    good = audit("verify", "--public-key", str(tmp_path / "trail.pem.pub"), cwd=tmp_path)
    assert good.returncode == 0 and "signed and verified" in good.stdout, good.stderr
    wrong = audit("verify", "--public-key", str(tmp_path / "other.pem.pub"), cwd=tmp_path)
    assert wrong.returncode == 1 and "not one of the keys given" in wrong.stderr
    unreadable = audit("verify", "--public-key", str(tmp_path / "p.yaml"), cwd=tmp_path)
    assert unreadable.returncode == 2 and "not a PEM public key" in unreadable.stderr
    one_line(unreadable)


def test_export_gives_one_row_per_decision_and_review_in_the_period(
    tmp_path: Path, chaos: ChaosServer, audit_store: Path
) -> None:
    script(chaos)
    file = project(tmp_path, chaos)
    run(file, actor="=HYPERLINK(evil)")
    rows = [json.loads(line) for line in audit("export", cwd=tmp_path).stdout.splitlines()]
    assert len(rows) == 3 and {r["kind"] for r in rows} == {"decision"}
    first = rows[0]
    for field in ("use_started_at", "use_ended_at", "document_hash", "source_ref", "policy_hash", "actor", "model"):
        assert first[field], field
    assert first["use_started_at"] <= first["use_ended_at"] and first["source"].endswith("docs/*")
    assert first["response_models"] == ["m"] and first["system_fingerprints"] == ["fp_chaos"]

    table = audit("export", "--format", "csv", "--from", "2020-01-01", "--to", "2999-12-31", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(parsed) == 3 and parsed[0]["actor"] == "'=HYPERLINK(evil)"  # a spreadsheet shows it, never runs it
    assert json.loads(parsed[0]["policy_files"])["p.yaml"]

    none = audit("export", "--to", "2020-01-01", cwd=tmp_path)
    assert none.returncode == 0 and none.stdout == "" and "0 records exported" in none.stderr
    bad = audit("export", "--from", "yesterday", cwd=tmp_path)
    assert bad.returncode == 2 and "not a date" in bad.stderr
    one_line(bad)
    target = tmp_path / "export.jsonl"
    written = audit("export", "--output", str(target), cwd=tmp_path)
    assert written.returncode == 0 and len(target.read_text().splitlines()) == 3


def test_purge_by_date_keeps_the_chain_verifiable(tmp_path: Path, chaos: ChaosServer, audit_store: Path) -> None:
    file = project(tmp_path, chaos)
    run(file)
    nothing = audit("purge", cwd=tmp_path)
    assert nothing.returncode == 0 and "no retention" in nothing.stderr
    run(file)  # a second run
    with sqlite3.connect(audit_store) as db:
        second = db.execute("SELECT at FROM audit_records WHERE seq = 6").fetchone()[0]  # its first record
    purged = audit("purge", "--before", second, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert "purged 5 records" in purged.stdout
    held = audit("verify", cwd=tmp_path)
    assert held.returncode == 0 and "after records 1 to 5 were purged" in held.stdout, held.stderr
    with sqlite3.connect(audit_store) as db:
        db.execute("DELETE FROM audit_records WHERE seq = 6")  # the oldest record kept
    gone = audit("verify", cwd=tmp_path)
    assert gone.returncode == 1 and "record 6" in gone.stderr


@pytest.mark.parametrize("actor", ["", "two\nlines"])
def test_purge_refuses_an_actor_that_names_no_one(tmp_path: Path, actor: str) -> None:
    done = audit("purge", "--actor", actor, cwd=tmp_path)
    assert done.returncode == 2
    one_line(done)
