"""Breakers, budgets, deadlines, caches and routing in the ladder, over real HTTP to the chaos endpoint."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from steadyflow.audit.records import DecisionRecord
from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from steadyflow.stages.budget import Budget
from steadyflow.stages.cache import OutputCache
from steadyflow.stages.engine import Engine
from tests.conftest import run_stage

PIPELINE = (
    """
pipeline: resilience
models:
  small: {{provider: openai, base_url: "{url}", timeout_s: 1, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}},
          breaker: {{consecutive_failures: 3, cooldown_s: 60}}}}
  big: {{provider: openai, base_url: "{url}", model: big, timeout_s: 1, """
    """price: {{input_per_mtok: 10.0, output_per_mtok: 20.0}}}}
stages:
  - id: s
    kind: ai
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output:
      category: {{enum: [billing, technical]}}
    ladder: {ladder}
{extra}
"""
)
RULES = {"rules": {"fields": {"category": {"keywords": {"billing": ["refund"]}, "default": "technical"}}}}


def _run(
    tmp_path: Path,
    url: str,
    ladder: list[dict[str, Any]],
    texts: list[str],
    extra: str = "",
    concurrency: int = 1,
    cache: OutputCache | None = None,
    budget: Budget | None = None,
) -> list[DecisionRecord]:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=url, ladder=json.dumps(ladder), extra=extra))
    pipeline = load_pipeline(file)
    docs = [Document(f"d{i}", t, "mem") for i, t in enumerate(texts)]
    return run_stage(pipeline, "s", docs, concurrency, cache=cache, budget=budget)


def test_an_open_breaker_skips_the_endpoint_without_calling_it(tmp_path: Path) -> None:
    server = ChaosServer(ChaosConfig(faults={"http_503": 1.0})).start()
    try:
        records = _run(
            tmp_path, server.base_url, [{"model": "small", "reasks": 0, "retries": 0}, RULES], ["refund"] * 10
        )
        calls = server.stats.get("http_503", 0)
    finally:
        server.stop()
    assert calls == 3  # three failures opened it; the other seven documents never reached the endpoint
    kinds = [r.attempts[0].error_kind for r in records]
    assert kinds.count("server_error") == 3 and kinds.count("circuit_open") == 7
    assert all(r.status == "rules" for r in records)
    assert all(r.attempts[0].cost_usd == 0 for r in records if r.attempts[0].error_kind == "circuit_open")


def test_a_spent_run_budget_degrades_to_rules_instead_of_spending(tmp_path: Path, chaos: ChaosServer) -> None:
    extra = "budget: {run: {usd: 0.0005}}"
    records = _run(tmp_path, chaos.base_url, [{"model": "small"}, RULES], ["please refund"] * 12, extra)
    spent = sum(r.cost_usd for r in records)
    first_cost = records[0].cost_usd
    assert spent < 0.0005 + first_cost  # at most the call in flight past the limit (one at a time here)
    skipped = [r for r in records if r.attempts[0].error_kind == "budget_exhausted"]
    assert skipped and all(r.status == "rules" for r in skipped)
    assert len(chaos.requests) == len(records) - len(skipped)


def test_a_free_model_still_runs_when_the_budget_is_spent(tmp_path: Path, chaos: ChaosServer) -> None:
    free = PIPELINE.replace(
        "price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}", "price: {{input_per_mtok: 0, output_per_mtok: 0}}"
    )
    file = tmp_path / "p.yaml"
    file.write_text(
        free.format(url=chaos.base_url, ladder=json.dumps([{"model": "small"}, RULES]), extra="budget: {run: {usd: 0}}")
    )
    pipeline = load_pipeline(file)

    async def go() -> list[DecisionRecord]:
        engine = Engine.create(pipeline, "r", 1)
        try:
            return await engine.run_stage("s", [Document("d", "refund", "mem")])
        finally:
            await engine.aclose()

    [record] = asyncio.run(go())
    assert record.status == "validated"


def test_the_document_deadline_cuts_the_ladder_short(tmp_path: Path) -> None:
    server = ChaosServer(ChaosConfig(faults={"timeout": 1.0}, hang_s=5)).start()
    try:
        ladder = [{"model": "small", "retries": 3}, {"model": "big", "retries": 3}, RULES]
        import time

        started = time.monotonic()
        [record] = _run(tmp_path, server.base_url, ladder, ["refund"], extra="    deadline_s: 1.5")
        took = time.monotonic() - started
    finally:
        server.stop()
    assert record.status == "rules" and took < 4
    assert "deadline" in [a.error_kind for a in record.attempts]


def test_exact_and_semantic_cache_rungs(tmp_path: Path, chaos: ChaosServer) -> None:
    cache = OutputCache(tmp_path / "cache.sqlite")
    ladder = [{"cache": "exact"}, {"cache": "semantic", "threshold": 0.9}, {"model": "small"}, RULES]
    first = _run(tmp_path, chaos.base_url, ladder, ["I was charged twice, please refund my invoice"], cache=cache)
    assert first[0].status == "validated" and len(chaos.requests) == 1
    again = _run(tmp_path, chaos.base_url, ladder, ["I was charged twice, please refund my invoice"], cache=cache)
    similar = _run(tmp_path, chaos.base_url, ladder, ["I was charged twice, please refund my invoice!"], cache=cache)
    other = _run(tmp_path, chaos.base_url, ladder, ["The app crashes at start"], cache=cache)
    assert (again[0].status, again[0].rung_label) == ("cached", "cache:exact")
    assert (similar[0].status, similar[0].rung_label) == ("cached", "cache:semantic")
    assert other[0].status == "validated" and len(chaos.requests) == 2  # only the new document called the model
    assert again[0].cost_usd == 0 and [a.kind for a in again[0].attempts] == ["cache"]


def test_a_cache_hit_must_still_pass_the_checks(tmp_path: Path, chaos: ChaosServer) -> None:
    cache = OutputCache(tmp_path / "cache.sqlite")
    chaos.script.append({"content": {"category": "technical"}})
    ladder = [{"cache": "exact"}, {"model": "small", "reasks": 0}, RULES]
    _run(tmp_path, chaos.base_url, ladder, ["refund"], cache=cache)  # caches 'technical'
    rule = "    validate: [{layer: business, check: rule, rule: \"output.category == 'billing'\"}]"
    [record] = _run(tmp_path, chaos.base_url, ladder, ["refund"], extra=rule, cache=cache)
    assert record.rung_label != "cache:exact"
    assert [(v.check, v.action, v.rung) for v in record.verdicts if v.check == "rule"][:1] == [("rule", "escalate", 0)]


def test_routing_enters_the_ladder_by_estimated_complexity(tmp_path: Path, chaos: ChaosServer) -> None:
    route = "    route: {enter: {simple: small, moderate: small, complex: big}}"
    ladder = [{"model": "small"}, {"model": "big"}, RULES]
    short, long = "refund please", "Please explain and compare the clauses.\n" + "The contract says many things. " * 500
    records = _run(tmp_path, chaos.base_url, ladder, [short, long], extra=route)
    assert records[0].route and records[0].route["complexity"] == "simple" and records[0].rung_label == "model:small"
    assert records[1].route and records[1].route["complexity"] == "complex" and records[1].rung_label == "model:big"
    assert records[1].route["entry"] == 1 and records[1].route["estimator"] == "heuristic"


def test_expired_cache_entries_are_not_used(tmp_path: Path, chaos: ChaosServer) -> None:
    cache = OutputCache(tmp_path / "cache.sqlite")
    ladder = [{"cache": "exact", "ttl_h": 1}, {"model": "small"}, RULES]
    _run(tmp_path, chaos.base_url, ladder, ["refund"], cache=cache)
    import sqlite3

    with sqlite3.connect(tmp_path / "cache.sqlite") as db:  # the entry was stored two hours ago
        assert db.execute("UPDATE exact SET created = created - 7200").rowcount == 1
    [record] = _run(tmp_path, chaos.base_url, ladder, ["refund"], cache=cache)
    assert record.status == "validated" and record.attempts[0].error_kind == "cache_miss"


def test_a_spent_pipeline_budget_counts_earlier_runs(tmp_path: Path) -> None:
    import time

    from steadyflow.audit.log import DecisionLog
    from steadyflow.audit.records import Attempt
    from steadyflow.spec.resilience import BudgetSpec, Limit

    store = DecisionLog(tmp_path / "d.sqlite")
    earlier = DecisionRecord(
        "old",
        "d",
        "s",
        "resilience",
        "1",
        "h",
        None,
        "validated",
        attempts=[Attempt(0, "model", "small", tokens_in=10, cost_usd=0.4)],
    )
    store.add([earlier])
    usd, tokens = store.pipeline_spend("resilience", time.time() - 3600)
    assert (usd, tokens) == (0.4, 10)
    budget = Budget(BudgetSpec(pipeline=Limit(usd=0.5)), usd, tokens)
    assert budget.exhausted() is None
    budget.charge([Attempt(0, "model", "small", cost_usd=0.1)])
    assert budget.exhausted() == "pipeline"


def test_when_every_rung_is_spent_the_record_carries_all_attempts_and_usage(tmp_path: Path) -> None:
    server = ChaosServer(ChaosConfig(faults={"wrong_type": 1.0})).start()
    try:
        [record] = _run(
            tmp_path, server.base_url, [{"model": "small", "reasks": 1}, {"model": "big", "reasks": 1}], ["x"]
        )
    finally:
        server.stop()
    assert record.status == "quarantined" and record.reason == "every rung of the ladder failed"
    assert [(a.model, a.error_kind) for a in record.attempts] == [("small", "invalid_output")] * 2 + [
        ("big", "invalid_output")
    ] * 2
    assert record.tokens_in > 0 and record.cost_usd == sum(a.cost_usd for a in record.attempts) > 0


def test_a_registered_estimator_routes(tmp_path: Path, chaos: ChaosServer) -> None:
    from steadyflow.stages.routing import estimator

    @estimator("always_complex")
    def always_complex(text: str) -> float:
        return 1.0

    route = "    route: {estimator: always_complex, enter: {simple: small, complex: big}}"
    [record] = _run(tmp_path, chaos.base_url, [{"model": "small"}, {"model": "big"}, RULES], ["short"], extra=route)
    assert record.route == {"estimator": "always_complex", "score": 1.0, "complexity": "complex", "entry": 1}


def test_classes_without_an_entry_enter_by_price(tmp_path: Path, chaos: ChaosServer) -> None:
    route = "    route: {}"  # no enter map: simple -> the cheapest model rung, complex -> the dearest
    ladder = [{"model": "big"}, {"model": "small"}, RULES]
    long = "Please explain and compare the clauses.\n" + "The contract says many things. " * 500
    records = _run(tmp_path, chaos.base_url, ladder, ["refund please", long], extra=route)
    assert (records[0].route or {})["entry"] == 1 and records[0].rung_label == "model:small"
    assert (records[1].route or {})["entry"] == 0 and records[1].rung_label == "model:big"
