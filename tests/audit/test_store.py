"""The decision store's resume ledger: completed documents, sink marks, and interrupted attempts that keep their cost."""

from __future__ import annotations

from pathlib import Path

from steadyflow.audit.records import Attempt, DecisionRecord
from steadyflow.audit.report import run_cost
from steadyflow.audit.store import DecisionStore


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


def test_resume_sets_aside_unfinished_records_and_keeps_their_cost(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    store.start_run("r1", "p", "1", None, "hash")
    # d1 finished both stages and was written; d2 finished stage one when the run was killed
    store.add([record("d1", "extract", 0.01), record("d1", "triage", 0.02), record("d2", "extract", 0.04)])
    store.complete("r1", [("d1", False)], {"outputs": (120, "ab"), "quarantine": (0, "")})
    assert store.completed_ids("r1") == {store.key("d1")} and store.marks("r1") == {
        "outputs": (120, "ab"),
        "quarantine": (0, ""),
    }
    assert store.supersede_unfinished("r1") == (0.04, 120)
    assert {(r["doc_id"], r["stage_id"]) for r in store.records("r1")} == {
        (store.key("d1"), "extract"),
        (store.key("d1"), "triage"),
    }
    # the resumed run does d2 again; spend and the report count both attempts
    store.add([record("d2", "extract", 0.04), record("d2", "triage", 0.02)])
    store.complete("r1", [("d2", False)], {"outputs": (240, "cd"), "quarantine": (0, "")})
    usd, tokens = store.run_spend("r1")
    assert round(usd, 6) == 0.13 and tokens == 5 * 120  # four records and one interrupted attempt
    assert round(store.pipeline_spend("p", 0)[0], 6) == 0.13
    total = run_cost(store, "r1")["total"]
    assert total["usd_interrupted"] == 0.04 and round(total["usd"], 6) == 0.13
    assert store.overview("r1")["documents"] == 2
    store.close()


def test_a_resumed_run_keeps_its_start_and_clears_its_finish(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    store.start_run("r1", "p", "1", "flow-a", "hash")
    first = store.run_info("r1")
    store.finish_run("r1", {})
    store.start_run("r1", "p", "1", "flow-b", "hash")
    again = store.run_info("r1")
    assert first is not None and again is not None
    assert (
        again["started_at"] == first["started_at"] and again["finished_at"] is None and again["flow_run_id"] == "flow-b"
    )
    store.close()
