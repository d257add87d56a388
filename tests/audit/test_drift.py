"""Drift between runs: real runs over the chaos endpoint, compared through the CLI as a scheduled job would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from steadyflow.audit.drift import Profile, Thresholds, compare, psi, psi_noise
from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions
from steadyflow.spec.loader import load_pipeline

DOCS = 300
WORDS = ["invoice refund charged", "error crash outage", "password login", "parcel courier", "hello"]


def pipeline_file(folder: Path, base_url: str, price: float = 1.0) -> Path:
    """An AI stage over the chaos endpoint (enum, boolean, number, text), with a rules rung and a default."""
    (folder / "docs.jsonl").write_text(
        "".join(
            json.dumps({"id": f"t{i:04d}", "text": f"ticket {i}: {WORDS[i % len(WORDS)]} " + "words " * (i % 7)}) + "\n"
            for i in range(DOCS)
        )
    )
    (folder / "p.yaml").write_text(f"""
pipeline: drifting
models:
  small:
    provider: openai
    base_url: "{base_url}"
    model: chaos
    timeout_s: 10
    price: {{input_per_mtok: {price}, output_per_mtok: {2 * price}}}
source: {{kind: jsonl, path: docs.jsonl}}
stages:
  - id: triage
    kind: ai
    prompt: {{template: "Triage this ticket: {{{{ text }}}}"}}
    output:
      category: {{enum: [billing, technical, account, shipping]}}
      urgent: {{type: boolean}}
      score: {{type: number, minimum: 0, maximum: 10}}
      summary: {{type: string, max_length: 200}}
    validate:
      - {{layer: business, check: rule, rule: "output.score <= 9.5", on_fail: escalate}}
    ladder:
      - {{model: small, reasks: 0, retries: 0}}
      - {{default: {{category: account, urgent: false, score: 0, summary: "needs a person"}}, review: true}}
run: {{output: out, concurrency: 16, chunk_size: 50}}
sink: {{kind: jsonl, path: out.jsonl}}
""")
    return folder / "p.yaml"


def run_once(folder: Path, run_id: str, config: ChaosConfig, price: float = 1.0) -> None:
    """One run of the pipeline into folder/out against a chaos endpoint started with ``config``."""
    server = ChaosServer(config).start()
    try:
        pipeline = load_pipeline(pipeline_file(folder, server.base_url, price))
        summary = run_local(pipeline, RunOptions(run_id=run_id, check_workers=0))
    finally:
        server.stop()
    assert summary.documents == DOCS


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six runs of the same documents: a, b and c as a model behaves (other seeds, a few faults), then
    'pricey' (its price doubled), 'skewed' (it now says billing for half the tickets) and 'broken' (half
    its answers malformed)."""
    folder = tmp_path_factory.mktemp("drift")
    for run_id, seed in (("a", 1), ("b", 2), ("c", 3)):
        run_once(folder, run_id, ChaosConfig(seed=seed, latency_ms=100, faults={"malformed": 0.05}))
    run_once(folder, "pricey", ChaosConfig(seed=1, latency_ms=100, faults={"malformed": 0.05}), price=2.0)
    skew = {"category": ("billing", 0.5)}
    run_once(folder, "skewed", ChaosConfig(seed=4, latency_ms=100, faults={"malformed": 0.05}, skew=skew))
    run_once(folder, "broken", ChaosConfig(seed=5, latency_ms=100, faults={"malformed": 0.5}))
    return folder / "out" / "decisions.sqlite"


def cli(*args: str) -> tuple[int, str, str]:
    """``steadyflow compare ARGS`` as a user's shell runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "steadyflow.cli", "compare", *args], capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout, result.stderr


# Latency is this machine's: other tests running beside these can slow one run's documents by more than
# half a second. Where latency is not what a test is about, it is given a floor that load cannot reach;
# test_latency_is_flagged_when_it_rises_past_both_limits tests it with a known rise.
STEADY_LATENCY = ("--latency-ms", "5000")


def test_two_runs_of_the_same_inputs_are_not_flagged(runs: Path) -> None:
    code, out, _ = cli("a", "b", "--db", str(runs), "--json", *STEADY_LATENCY)
    data = json.loads(out)
    assert code == 0, data["flagged"]
    assert data["flagged"] == []
    assert data["baseline"]["documents"] == data["current"]["documents"] == DOCS
    kinds = {s["kind"] for s in data["shifts"]}
    assert kinds == {"rung", "presence", "field", "number", "length", "check", "review", "cost", "latency"}
    # the same documents against the same kind of model: field shares stay close, the PSI under its noise
    category = next(s for s in data["shifts"] if s["name"] == "triage.category")
    assert 0 <= category["value"] < category["noise"]


def test_a_model_that_drifted_is_found_and_exits_1(runs: Path) -> None:
    code, out, _ = cli("a", "skewed", "--db", str(runs), "--json", *STEADY_LATENCY)
    data = json.loads(out)
    assert code == 1
    assert "field triage.category" in data["flagged"]
    category = next(s for s in data["shifts"] if s["name"] == "triage.category")
    assert category["current"]["shares"]["billing"] > category["baseline"]["shares"]["billing"] + 0.25
    # only what the skew touched: the other fields, rungs and checks did not move
    assert all(name.startswith("field triage.category") for name in data["flagged"]), data["flagged"]


def test_a_failing_model_shows_as_rungs_review_and_checks(runs: Path) -> None:
    code, out, _ = cli("broken", "--last", "3", "--db", str(runs), "--json")  # against skewed, pricey and c pooled
    data = json.loads(out)
    assert code == 1
    assert data["baseline"]["runs"] == ["skewed", "pricey", "c"]
    assert data["baseline"]["documents"] == 3 * DOCS
    assert {"rung triage", "review"} <= set(data["flagged"])
    rung = next(s for s in data["shifts"] if s["kind"] == "rung")
    assert rung["current"]["shares"]["default"] > 0.3 > rung["baseline"]["shares"]["default"]


def test_a_price_rise_is_found_in_the_cost_per_document(runs: Path) -> None:
    code, out, _ = cli("a", "pricey", "--db", str(runs), "--json", *STEADY_LATENCY)
    data = json.loads(out)
    assert code == 1
    assert data["flagged"] == ["cost mean"]
    cost = next(s for s in data["shifts"] if s["kind"] == "cost")
    assert cost["value"] == pytest.approx(2.0, rel=0.1)  # the same answers (seed 1) at twice the price


def test_the_terminal_and_the_report_show_what_shifted(runs: Path, tmp_path: Path) -> None:
    page = tmp_path / "drift.html"
    code, out, _ = cli("a", "skewed", "--db", str(runs), "--report", str(page))
    assert code == 1
    assert "skewed (300 documents) against a (300 documents)" in out
    assert re.search(r"shifted +field triage\.category: psi \d", out)
    html = page.read_text()
    assert html.count('src="data:image/svg+xml;base64,') >= 5  # rungs, cost, category, urgent, score, summary
    assert "<b>shifted</b>" in html and "<table>" in html
    markdown = tmp_path / "drift.md"
    assert cli("a", "skewed", "--db", str(runs), "--report", str(markdown))[0] == 1
    assert "![documents by rung](data:image/svg+xml;base64," in markdown.read_text()


def test_by_default_the_newest_run_is_compared_with_the_one_before(runs: Path) -> None:
    code, out, _ = cli("--db", str(runs), "--json")
    data = json.loads(out)
    assert (data["baseline"]["runs"], data["current"]["runs"]) == (["skewed"], ["broken"])
    assert code == 1
    assert json.loads(cli("last", "--db", str(runs), "--json")[1])["current"]["runs"] == ["broken"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["nope", "a"], "no finished run 'nope' in this folder (newest: broken, skewed, pricey, c, b)"),
        (["a"], "no finished run of the same pipeline before 'a' to compare it with"),
        (["a", "b", "c"], "give at most two runs"),
        (["a", "a"], "'a' twice: give two different runs"),
    ],
)
def test_a_bad_run_is_one_line_and_exit_2(runs: Path, args: list[str], said: str) -> None:
    code, out, err = cli(*args, "--db", str(runs))
    assert code == 2
    assert err.strip().startswith(said) and len(err.strip().splitlines()) == 1 and not out


def test_a_missing_or_foreign_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert cli("--db", str(tmp_path / "none.sqlite"))[0] == 2
    (tmp_path / "decisions.sqlite").write_text("not a database")
    code, _, err = cli("--db", str(tmp_path / "decisions.sqlite"))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_few_documents_are_shown_but_never_flagged() -> None:
    base, cur = Profile(documents=10), Profile(documents=10)
    base.values["s.f"].update({"x": 10})
    cur.values["s.f"].update({"y": 10})
    shifts = compare(base, cur, Thresholds())
    field = next(s for s in shifts if s.kind == "field")
    assert field.value is not None and field.value > 1 and not field.flagged
    assert next(s for s in compare(base, cur, Thresholds(min_documents=10)) if s.kind == "field").flagged


def test_psi_of_equal_shares_is_zero_and_its_noise_shrinks_with_documents() -> None:
    from collections import Counter

    same: Counter[Any] = Counter({"a": 50, "b": 50})
    assert psi(same, same)[0] == pytest.approx(0.0)
    assert psi_noise(4, 100, 100) > psi_noise(4, 1000, 1000) > 0


def test_records_keep_lengths_and_numbers_on_a_grid_never_the_values() -> None:
    from steadyflow.audit.records import fingerprint

    kept = fingerprint(
        {"category": "billing", "summary": "card 4111 declined", "tags": ["a", "b"], "amount": 1234.56, "n": 0},
        ["category"],
        lambda text: f"d{len(text)}",
    )
    assert kept["category"] == {"value": "billing"}
    assert kept["summary"] == {"digest": "d20", "length": 18}
    assert kept["tags"] == {"digest": "d10", "length": 2}
    assert kept["n"] == {"digest": "d1", "approx": 0}
    approx = kept["amount"]["approx"]
    assert approx != 1234.56 and abs(approx / 1234.56 - 1) <= 0.025
    assert fingerprint({"amount": -1234.56}, [], str)["amount"]["approx"] == -approx


def test_runs_of_another_pipeline_are_not_compared(runs: Path, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    copy = tmp_path / "out"
    shutil.copytree(runs.parent, copy)
    with sqlite3.connect(copy / "runs.sqlite") as db:
        db.execute("UPDATE runs SET pipeline = 'other' WHERE run_id = 'b'")
    code, _, err = cli("a", "b", "--db", str(copy / "decisions.sqlite"))
    assert code == 2 and "different pipelines (drifting, other)" in err


def test_a_log_from_before_outputs_were_kept_is_compared_on_what_it_has(runs: Path, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    copy = tmp_path / "out"
    shutil.copytree(runs.parent, copy)
    with sqlite3.connect(copy / "decisions.sqlite") as db:
        db.execute("ALTER TABLE decisions DROP COLUMN outputs")
    code, out, _ = cli("a", "b", "--db", str(copy / "decisions.sqlite"), "--json", *STEADY_LATENCY)
    data = json.loads(out)
    assert code == 0 and {s["kind"] for s in data["shifts"]} == {
        "rung",
        "presence",
        "check",
        "review",
        "cost",
        "latency",
    }


def test_a_stage_no_longer_reached_is_a_shift_of_its_presence() -> None:
    base, cur = Profile(runs=["a"], documents=100), Profile(runs=["b"], documents=100)
    base.ended["triage"].update({"model:small": 100})
    base.ended["summarise"].update({"model:small": 100})
    cur.ended["triage"].update({"model:small": 100})
    flagged = [f"{s.kind} {s.name}" for s in compare(base, cur, Thresholds()) if s.flagged]
    assert flagged == ["presence summarise"]


def test_numbers_too_large_for_a_float_are_kept_as_a_digest_only() -> None:
    from steadyflow.audit.records import fingerprint

    kept = fingerprint({"a": 10**400, "b": 1.79e308, "c": float("nan"), "d": -float("inf")}, [], str)
    assert all(set(value) == {"digest"} for value in kept.values())
    assert fingerprint({"age": 47}, [], str, numbers=False) == {"age": {"digest": "47"}}


def test_latency_is_flagged_when_it_rises_past_both_limits() -> None:
    base, cur = Profile(runs=["a"], documents=100), Profile(runs=["b"], documents=100)
    base.latency.update({200.0: 50, 300.0: 50})
    cur.latency.update({250.0: 50, 1200.0: 50})  # p50 +50 ms (1.25x), p95 +900 ms (4x)
    latency = {s.name: s for s in compare(base, cur, Thresholds()) if s.kind == "latency"}
    assert not latency["latency p50"].flagged and latency["latency p95"].flagged
    assert not any(s.flagged for s in compare(base, cur, Thresholds(latency_ms=1000)) if s.kind == "latency")
    assert not any(s.flagged for s in compare(cur, base, Thresholds()) if s.kind == "latency")  # a fall is shown only


def test_a_shift_past_its_threshold_but_within_chance_is_shown_as_unsure() -> None:
    base, cur = Profile(runs=["a"], documents=40), Profile(runs=["b"], documents=40)
    base.values["triage.category"].update({"billing": 19, "technical": 21})
    cur.values["triage.category"].update({"billing": 33, "technical": 7})
    (field,) = [s for s in compare(base, cur, Thresholds()) if s.kind == "field"]
    assert field.value is not None and field.value > 0.2 and not field.flagged and field.unsure
    from steadyflow.audit.drift_view import lines

    (line,) = [line for line in lines([field]) if line.startswith("unsure")]
    assert line.startswith("unsure   field triage.category: psi ") and "passes 0.2, but chance reaches" in line
