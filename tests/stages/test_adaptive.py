"""Adaptive routing's estimates, and hedged calls over real HTTP (two chaos endpoints, one slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steadyflow.audit.records import Attempt
from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec.errors import SpecError
from steadyflow.spec.loader import load_pipeline
from steadyflow.spec.resilience import AdaptiveSpec
from steadyflow.stages.adaptive import Estimates, HedgeBudget
from tests.conftest import run_stage

RUNGS = {0: "local", 1: "mini", 2: "frontier"}
PRICES = {"local": (0.0, 0.0), "mini": (0.15, 0.6), "frontier": (2.5, 10.0)}


def estimates(**spec: float) -> Estimates:
    return Estimates(AdaptiveSpec(explore=0.0, **spec), RUNGS, PRICES)


def answer(rung: int, ok: bool = True, ms: float = 100.0, cost: float = 0.0) -> list[Attempt]:
    first = Attempt(rung, "model", RUNGS[rung], latency_ms=ms, cost_usd=cost)
    if ok:
        return [first]
    first.error_kind = "invalid_output"
    return [first, Attempt(rung, "model", RUNGS[rung], latency_ms=ms, cost_usd=cost)]


def test_before_any_outcome_the_cheapest_rung_in_the_ladders_order_enters() -> None:
    entry, why = estimates().choose("simple")
    assert entry == 0 and why["why"] == "cheapest above the floor"
    assert set(why["estimates"]) == {"local", "mini", "frontier"}


def test_a_rung_whose_first_answers_fail_the_checks_stops_being_an_entry_for_that_class_only() -> None:
    found = estimates(quality_floor=0.9)
    for _ in range(40):  # local fails the checks on 1 document in 4 of the complex class
        for n in range(4):
            found.observe("complex", answer(0, ok=n != 0), accepted_rung=0)
        found.observe("simple", answer(0), accepted_rung=0)
    assert found.choose("complex")[0] == 1
    assert found.choose("simple")[0] == 0
    assert found.choose("complex")[1]["estimates"]["local"]["pass"] < 0.9


def test_documents_of_one_class_but_different_scores_learn_their_own_entry() -> None:
    # thresholds tuned elsewhere put short and long requests in one class: bands of the score keep them apart
    found = estimates(quality_floor=0.9, bands=20)
    short, long = found.band(0.36, "moderate"), found.band(0.46, "moderate")
    assert short != long and short == found.band(0.39, "moderate")
    for _ in range(40):
        found.observe(short, answer(0), accepted_rung=0)
        for n in range(4):
            found.observe(long, answer(0, ok=n != 0), accepted_rung=0)
    assert found.choose(short)[0] == 0 and found.choose(long)[0] == 1
    assert estimates(bands=1).band(0.46, "moderate") == "moderate"  # one band: per class, as the thresholds say


def test_exploration_tries_the_cheaper_neighbour_of_the_entry_only() -> None:
    found = Estimates(AdaptiveSpec(explore=0.5), {**RUNGS, 3: "frontier-b"}, {**PRICES, "frontier-b": (3.0, 15.0)})
    assert {found.choose("simple")[0] for _ in range(200)} == {0}  # local enters: nothing cheaper to explore
    for _ in range(40):  # local fails a third of its first answers: mini enters, local is still looked at
        for n in range(3):
            found.observe("simple", answer(0, ok=n != 0), accepted_rung=0)
    entries = [found.choose("simple")[0] for _ in range(400)]
    assert set(entries) == {0, 1} and 120 < entries.count(0) < 280  # never a frontier model: they are seen below


def test_below_the_floor_quality_has_a_price_a_rung_enters_only_where_it_saves_more() -> None:
    # mini fails the checks on 1 document in 4 everywhere; on long documents the frontier costs 100x as much
    def ladder(**spec: float) -> Estimates:
        return Estimates(
            AdaptiveSpec(explore=0.0, quality_floor=0.9, latency_usd_per_s=0.001, **spec),
            {1: "mini", 2: "frontier"},
            PRICES,
        )

    found = ladder(wrong_usd=0.01)
    for _ in range(60):
        for n in range(4):
            for klass, cost in (("moderate", 0.0003), ("complex", 0.001)):
                found.observe(klass, answer(1, ok=n != 0, ms=1000, cost=cost), accepted_rung=1)
                found.observe(klass, answer(2, ms=1200, cost=cost * (3 if klass == "moderate" else 100)), 2)
    moderate, complex_ = found.choose("moderate"), found.choose("complex")
    assert moderate[0] == 2 and moderate[1]["why"] == "cheapest above the floor"  # saves 0.0006: not worth 0.25
    assert complex_[0] == 1 and complex_[1]["why"] == "below the floor, saves more than it risks"  # saves 0.1
    unpriced = ladder()  # no price for quality: never below the floor
    unpriced.cells = found.cells
    assert unpriced.choose("complex")[0] == 2


def test_an_endpoint_that_stops_answering_is_left_and_found_again_when_it_recovers() -> None:
    found = estimates(window=20)
    for _ in range(20):
        found.observe("simple", [Attempt(0, "model", "local", error_kind="server_error")], accepted_rung=1)
        found.observe("simple", answer(1, cost=0.0001), accepted_rung=1)
    assert found.choose("simple")[0] == 1
    for _ in range(20):  # the window forgets the incident once local answers again (explored documents)
        found.observe("simple", answer(0), accepted_rung=0)
    assert found.choose("simple")[0] == 0


def test_cost_and_latency_decide_between_rungs_that_both_pass() -> None:
    found = estimates(latency_usd_per_s=0.001)
    for _ in range(30):
        found.observe("moderate", answer(0, ms=4000), accepted_rung=0)  # free but slow: 0.004 USD of latency
        found.observe("moderate", answer(1, ms=300, cost=0.0002), accepted_rung=1)
    assert found.choose("moderate")[0] == 1
    assert found.hedge_after_ms(0, 0.9, "moderate") == 4000 and found.hedge_after_ms(2, 0.9, "moderate") is None


def test_estimates_are_kept_across_runs(tmp_path: Path) -> None:
    found = estimates()
    for _ in range(30):
        found.observe("simple", answer(0, ok=False), accepted_rung=1)
    (tmp_path / "e.json").write_text('{"local|simple": [[true')  # torn by a killed run: replaced whole
    found.save(tmp_path / "e.json")
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]
    again = estimates()
    again.load(tmp_path / "e.json")
    assert again.choose("simple")[0] == found.choose("simple")[0] == 1
    again.load(tmp_path / "missing.json")  # nothing kept yet: no error


def test_the_hedge_budget_holds_its_share() -> None:
    budget = HedgeBudget(0.1)
    allowed = 0
    for _ in range(100):
        budget.calls += 1
        allowed += budget.allow()
    assert allowed == 10


PIPELINE = """
pipeline: hedged
models:
  slow:
    {{provider: openai, base_url: "{slow}", mode: json_schema, timeout_s: 10,
     price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}}}
  fast: {{provider: openai, base_url: "{fast}", mode: json_schema, timeout_s: 10}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder:
      - {{model: slow, reasks: 0, retries: 0, hedge: {{after_ms: 100, max_share: {share}}}}}
      - {{model: fast, reasks: 0, retries: 0}}
"""


@pytest.fixture
def two_endpoints() -> object:
    slow = ChaosServer(ChaosConfig(seed=1, latency_ms=1500)).start()
    fast = ChaosServer(ChaosConfig(seed=2)).start()
    yield slow, fast
    slow.stop()
    fast.stop()


def test_a_slow_call_is_hedged_the_first_valid_answer_wins_and_both_are_paid(
    tmp_path: Path, two_endpoints: object
) -> None:
    slow, fast = two_endpoints  # type: ignore[misc]
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(slow=slow.base_url, fast=fast.base_url, share=0.5))
    docs = [Document(f"t{n}", f"ticket {n}: my invoice is wrong", "test") for n in range(10)]
    records = run_stage(load_pipeline(file), "s", docs, concurrency=10)
    hedged = [r for r in records if any(a.hedge for a in r.attempts)]
    assert len(hedged) == 5  # half the rung's calls at most
    for record in hedged:
        lost, won = record.attempts
        assert (lost.model, lost.error_kind, won.model, won.hedge) == ("slow", "hedge_lost", "fast", True)
        assert lost.tokens_in > 0 and lost.cost_usd > 0  # the cancelled call's input is paid, and recorded
        assert (won.wait_reason, won.waited_ms) == ("hedge", 100.0)  # it went out after the rung's call ran 100 ms
        assert (record.rung, record.rung_label, record.status) == (1, "model:fast", "validated")
        assert record.latency_ms < 1400  # the slow answer was not waited for
    plain = [r for r in records if r not in hedged]
    assert all(r.rung_label == "model:slow" and len(r.attempts) == 1 for r in plain)


def test_a_hedge_needs_a_model_rung_below_it_and_a_rung_cannot_also_vote(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        PIPELINE.format(slow="http://127.0.0.1:1/v1", fast="http://127.0.0.1:1/v1", share=0.1).replace(
            "      - {model: fast, reasks: 0, retries: 0}\n", "      - {default: {category: billing}}\n"
        )
    )
    with pytest.raises(SpecError, match="a hedge goes to the next model rung"):
        load_pipeline(file)
    file.write_text(file.read_text().replace("hedge: {after_ms: 100, max_share: 0.1}", "vote: 3, hedge: {after_ms: 1}"))
    with pytest.raises(SpecError, match="either votes or hedges"):
        load_pipeline(file)


def test_the_report_and_the_explanation_say_why_documents_entered_where_they_did_and_what_hedges_did(
    tmp_path: Path, two_endpoints: object
) -> None:
    from steadyflow.audit.explain import _route
    from steadyflow.audit.ledger import RunLedger
    from steadyflow.audit.log import DecisionLog
    from steadyflow.audit.report import run_cost

    slow, fast = two_endpoints  # type: ignore[misc]
    file = tmp_path / "p.yaml"
    text = PIPELINE.format(slow=slow.base_url, fast=fast.base_url, share=0.5)
    text = text.replace("    ladder:\n", "    route: {estimator: heuristic, adaptive: {explore: 0}}\n    ladder:\n")
    # priced alike: the declared order decides before anything is seen
    file.write_text(
        text.replace("timeout_s: 10}", "timeout_s: 10, price: {input_per_mtok: 1.0, output_per_mtok: 1.0}}")
    )
    docs = [Document(f"t{n}", f"ticket {n}: my invoice is wrong", "test") for n in range(10)]
    records = run_stage(load_pipeline(file), "s", docs, concurrency=10)
    log, ledger = DecisionLog(tmp_path / "decisions.sqlite"), RunLedger(tmp_path / "runs.sqlite")
    ledger.start_run("run", "hedged", "1", None)
    log.add(records)
    report = run_cost(log, ledger, "run")["routing"]["s"]
    assert report["entries"] == {"cheapest above the floor -> slow": 10}  # nothing seen yet: the first rung
    assert report["hedges"]["fired"] == report["hedges"]["won"] == 5 and report["hedges"]["usd"] > 0
    stored = log.records("run")[0]
    said = "\n".join(_route(stored["route"]))
    assert "entered at rung 0: cheapest above the floor" in said and "slow: first answers passing" in said
    log.close()
    ledger.close()
    shown = subprocess.run(
        [sys.executable, "-m", "steadyflow.cli", "report", "run", "--db", str(tmp_path / "decisions.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "routing of s: hedges fired 5, won 5" in shown.stdout
    assert "10  cheapest above the floor -> slow" in shown.stdout


def test_the_report_counts_a_hedge_won_only_when_its_answer_is_the_output() -> None:
    from steadyflow.audit.report import routing

    def attempt(rung: int, model: str, hedge: bool | None = None, error: str | None = None) -> dict[str, object]:
        found: dict[str, object] = {"rung": rung, "model": model, "error_kind": error, "cost_usd": 0.001}
        return found if hedge is None else {**found, "hedge": hedge}

    fixed = {"estimator": "heuristic", "score": 0.1, "complexity": "simple", "entry": 0}
    records = [
        # the hedge answered, its answer failed a check, and mini's own call gave the output: not won
        {
            "stage_id": "s",
            "status": "validated",
            "rung": 1,
            "route": fixed,
            "attempts": [attempt(0, "local", error="hedge_lost"), attempt(1, "mini", True), attempt(1, "mini", False)],
        },
        {
            "stage_id": "s",
            "status": "validated",
            "rung": 1,
            "route": fixed,
            "attempts": [attempt(0, "local", error="hedge_lost"), attempt(1, "mini", True)],
        },  # won
        {
            "stage_id": "s",
            "status": "quarantined",
            "rung": None,
            "route": None,
            "attempts": [attempt(0, "local", error="hedge_lost"), attempt(1, "mini", True, "invalid_output")],
        },
        {"stage_id": "s", "status": "validated", "rung": 0, "route": None, "attempts": [attempt(0, "local")]},  # old
    ]
    found = routing(records)["s"]
    assert found["hedges"] == {"fired": 3, "won": 1, "usd": 0.006}  # hedged and cancelled calls
    assert found["entries"] == {"class simple -> local": 2}
