"""The run ledger next to the decision log.

Completed documents, sink marks, interrupted attempts that keep their cost.
"""

from __future__ import annotations

from pathlib import Path

from steadyflow.audit.ledger import RunLedger, supersede_unfinished
from steadyflow.audit.log import DecisionLog
from steadyflow.audit.records import Attempt, DecisionRecord
from steadyflow.audit.report import run_cost, run_overview


def record(doc: str, stage: str, usd: float) -> DecisionRecord:
    attempt = Attempt(rung=0, kind="model", model="m", tokens_in=100, tokens_out=20, cost_usd=usd)
    return DecisionRecord(
        run_id="r1",
        doc_id=doc,
        stage_id=stage,
        pipeline="p",
        pipeline_version="1",
        input_hash="h",
        prompt_version="v",
        status="model",
        rung=0,
        rung_label="model:m",
        model="m",
        attempts=[attempt],
    )


def spend(log: DecisionLog, ledger: RunLedger) -> tuple[float, int]:
    recorded, interrupted = log.run_spend("r1"), ledger.interrupted("r1")
    return round(recorded[0] + interrupted[0], 6), recorded[1] + interrupted[1]


def test_resume_sets_aside_unfinished_records_and_keeps_their_cost(tmp_path: Path) -> None:
    log, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("r1", "p", "1", None, "hash")
    # d1 finished both stages and was written; d2 finished stage one when the run was killed
    log.add([record("d1", "extract", 0.01), record("d1", "triage", 0.02), record("d2", "extract", 0.04)])
    ledger.complete("r1", [(log.key("d1"), False)], {"outputs": (120, "ab"), "quarantine": (0, "")})
    assert ledger.completed_keys("r1") == {log.key("d1")}
    assert ledger.marks("r1") == {"outputs": (120, "ab"), "quarantine": (0, "")}
    assert supersede_unfinished(log, ledger, "r1") == (0.04, 120)
    assert {(r["doc_id"], r["stage_id"]) for r in log.records("r1")} == {
        (log.key("d1"), "extract"),
        (log.key("d1"), "triage"),
    }
    # the resumed run does d2 again; spend and the report count both attempts
    log.add([record("d2", "extract", 0.04), record("d2", "triage", 0.02)])
    ledger.complete("r1", [(log.key("d2"), False)], {"outputs": (240, "cd"), "quarantine": (0, "")})
    assert spend(log, ledger) == (0.13, 5 * 120)  # four records and one interrupted attempt
    assert round(log.pipeline_spend("p", 0)[0] + ledger.interrupted_since("p", 0)[0], 6) == 0.13
    total = run_cost(log, ledger, "r1")["total"]
    assert total["usd_interrupted"] == 0.04 and round(total["usd"], 6) == 0.13
    assert run_overview(log, ledger, "r1")["documents"] == 2
    log.close()
    ledger.close()


def test_a_crash_between_the_two_files_is_repaired_by_the_next_resume(tmp_path: Path) -> None:
    log, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("r1", "p", "1", None, "hash")
    log.add([record("d1", "extract", 0.01), record("d2", "extract", 0.04)])
    ledger.complete("r1", [(log.key("d1"), False)], {})
    # the ledger kept the cost, then the process died before the log deleted the records
    ledger.set_aside(log.unfinished("r1", ledger.completed_keys("r1")))
    assert len(log.records("r1")) == 2
    assert supersede_unfinished(log, ledger, "r1") == (0.04, 120)  # counted once, not twice
    assert [r["doc_id"] for r in log.records("r1")] == [log.key("d1")]
    assert spend(log, ledger) == (0.05, 240)
    assert supersede_unfinished(log, ledger, "r1") == (0.04, 120)  # a second resume changes nothing
    log.close()
    ledger.close()


def test_the_ledger_never_holds_document_ids(tmp_path: Path) -> None:
    log, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("r1", "p", "1", None, "hash")
    log.add([record("alice@example.com", "extract", 0.01), record("bob@example.com", "extract", 0.01)])
    ledger.complete("r1", [(log.key("alice@example.com"), False)], {})
    supersede_unfinished(log, ledger, "r1")
    log.close()
    ledger.close()
    assert b"example.com" not in (tmp_path / "runs.sqlite").read_bytes()


def test_a_resumed_run_keeps_its_start_and_clears_its_finish(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("r1", "p", "1", "flow-a", "hash")
    first = ledger.run_info("r1")
    ledger.finish_run("r1", {})
    ledger.start_run("r1", "p", "1", "flow-b", "hash")
    again = ledger.run_info("r1")
    assert first is not None and again is not None
    assert (
        again["started_at"] == first["started_at"] and again["finished_at"] is None and again["flow_run_id"] == "flow-b"
    )
    ledger.close()
