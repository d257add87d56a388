"""The simulated fleet behaves as its scenario says: errors, incidents, JSON validity, correctness, timing header."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from steadyflow.chaos.fleet import FleetServer, workload


def _scenario(**endpoint: Any) -> dict[str, Any]:
    base = {
        "price": {"input_per_mtok": 1, "output_per_mtok": 2},
        "ttft_ms": {"median": 100, "p95": 200},
        "tokens_per_s": 1000,
        "errors": {},
        "prompted_json_invalid": 0.0,
        "schema_json_invalid": 0.0,
    }
    return {
        "seed": 7,
        "time_scale": 100,
        "requests": 40,
        "endpoints": {"e": {**base, **endpoint}},
        "incidents": [{"endpoint": "e", "from": 0.5, "to": 1.0, "rate_5xx": 1.0}],
        "workload": {
            "classes": {"simple": {"share": 1.0, "input_tokens": 50, "output_tokens": 10}},
            "correct": {"e": {"simple": 1.0}},
            "detectable": 1.0,
        },
    }


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Any:
    scenario = _scenario(**getattr(request, "param", {}))
    server = FleetServer(scenario, workload(scenario)).start()
    yield server, workload(scenario)
    server.stop()


def _ask(server: FleetServer, text: str, constrained: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": "e", "messages": [{"role": "user", "content": text}]}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    return httpx.post(f"{server.url('e')}/chat/completions", json=body, timeout=10)


def test_requests_are_sized_and_answered_right_with_the_timing_header(fleet: Any) -> None:
    server, requests = fleet
    first = requests[0]
    assert 150 <= len(first.text) <= 260 and first.evidence in first.text  # 50 tokens ~ 200 characters
    response = _ask(server, first.text)
    assert response.status_code == 200 and float(response.headers["openai-processing-ms"]) > 0
    answer = json.loads(response.json()["choices"][0]["message"]["content"])
    assert answer == {"label": first.label, "evidence": first.evidence}


def test_an_incident_window_applies_by_position_in_the_run(fleet: Any) -> None:
    server, requests = fleet
    assert _ask(server, requests[10].text).status_code == 200
    assert _ask(server, requests[30].text).status_code == 503  # 30/40 is inside 0.5-1.0


@pytest.mark.parametrize("fleet", [{"prompted_json_invalid": 1.0}], indirect=True)
def test_prompted_json_breaks_where_constrained_json_does_not(fleet: Any) -> None:
    server, requests = fleet
    prompted = _ask(server, requests[1].text).json()["choices"][0]["message"]["content"]
    constrained = _ask(server, requests[2].text, constrained=True).json()["choices"][0]["message"]["content"]
    with pytest.raises(json.JSONDecodeError, match=r"line 1 column \d+"):
        json.loads(prompted)
    assert json.loads(constrained)["label"] == requests[2].label


@pytest.mark.parametrize("fleet", [{"errors": {"rate_429": 1.0}}], indirect=True)
def test_rate_limits_carry_a_scaled_retry_after(fleet: Any) -> None:
    server, requests = fleet
    response = _ask(server, requests[0].text)
    assert response.status_code == 429 and float(response.headers["retry-after"]) == pytest.approx(0.01)


def test_a_request_without_its_id_is_refused(fleet: Any) -> None:
    server, _ = fleet
    assert _ask(server, "hello").status_code == 400


NOISY = {"errors": {"rate_5xx": 0.5}, "ttft_ms": {"median": 100, "p95": 900}}


@pytest.mark.parametrize("fleet", [NOISY], indirect=True)
def test_after_a_reset_every_call_meets_the_same_draws_again(fleet: Any) -> None:
    # common random numbers: strategies benchmarked one after another see the same dice, not fresh ones
    server, requests = fleet

    def outcomes() -> list[tuple[int, str]]:
        asked = [_ask(server, r.text) for r in requests[:12] for _ in range(2)]  # each request twice: tries 1 and 2
        return [(a.status_code, a.headers.get("openai-processing-ms", "")) for a in asked]

    first = outcomes()
    assert len(set(first)) > 4  # errors and latencies vary from call to call
    assert outcomes() != first  # without a reset, later calls are later tries: other draws
    assert httpx.post(f"http://{server.host}:{server.port}/_chaos/reset", timeout=10).status_code == 200
    assert outcomes() == first
