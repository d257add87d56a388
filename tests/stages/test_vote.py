"""vote: N on a model rung: N samples, the majority kept, the agreement as the confidence (no log-probabilities)."""

from __future__ import annotations

from pathlib import Path

from steadyflow.chaos.server import ChaosServer
from steadyflow.stages.vote import majority
from tests.validators.test_confidence_check import pipeline_file, process, script, sent

TWO_THIRDS = round(2 / 3, 6)
LADDER = "[{model: m, reasks: 0, retries: 0, vote: 3}, {default: {category: technical}, review: true}]"


def test_the_answer_agreeing_with_most_majorities_is_kept_and_votes_that_never_came_count_against() -> None:
    outputs = [
        {"category": "billing", "urgent": True, "summary": "a"},
        {"category": "technical", "urgent": False, "summary": "b"},
        {"category": "billing", "urgent": False, "summary": "c"},
    ]
    assert majority(outputs, ["category", "urgent"], asked=3) == (2, {"category": TWO_THIRDS, "urgent": TWO_THIRDS})
    assert majority(outputs, ["category", "urgent"], asked=5) == (2, {"category": 0.4, "urgent": 0.4})
    assert majority(outputs[:1], ["category"], asked=3) == (0, {"category": round(1 / 3, 6)})
    assert majority([{"category": "x"}, {"category": "y"}], ["category"], asked=2) == (0, {"category": 0.5})


async def test_votes_give_a_confidence_where_the_endpoint_gives_no_log_probabilities(
    chaos: ChaosServer, tmp_path: Path
) -> None:
    check = "{layer: semantic, check: confidence, field: category, min: 0.6, on_fail: escalate}"
    path = pipeline_file(tmp_path, chaos, check=check, ladder=LADDER, model="mode: tools")  # tools: no logprobs
    script(chaos, *[{"content": {"category": c}} for c in ("billing", "technical", "billing")])
    result = await process(path)
    assert (result.rung, result.output, result.review) == ("model:m", {"category": "billing"}, False)
    assert result.records[0].confidence == {"category": TWO_THIRDS}
    requests = sent(chaos)
    assert len(requests) == 3 and {r["temperature"] for r in requests} == {0.8}  # samples, not one greedy answer
    assert "logprobs" not in requests[0]  # a vote asks for no log-probabilities
    assert len(result.records[0].attempts) == 3  # every vote is paid for and recorded


async def test_a_split_vote_escalates_like_a_low_log_probability(chaos: ChaosServer, tmp_path: Path) -> None:
    check = "{layer: semantic, check: confidence, field: category, min: 0.8, on_fail: escalate}"
    path = pipeline_file(tmp_path, chaos, check=check, ladder=LADDER, model="mode: tools")
    script(chaos, {"content": {"category": "billing"}}, {"fault": "http_500"}, {"content": {"category": "billing"}})
    result = await process(path)  # 2 of 3 asked agree (one call failed): 0.67 < 0.8
    assert (result.rung, result.output, result.review) == ("default", {"category": "technical"}, True)
    verdict = next(v for v in result.records[0].verdicts if v.check == "confidence")
    assert (verdict.action, verdict.message) == ("escalate", "confidence of 'category' 0.67 < 0.8")
