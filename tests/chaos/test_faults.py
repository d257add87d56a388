"""Every chaos fault, over real HTTP, becomes the right typed error in our client."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from steadyflow.chaos.server import FAULTS, ChaosConfig, ChaosServer
from steadyflow.core.vocabulary import ErrorKind
from steadyflow.providers.errors import ModelCallError
from steadyflow.providers.openai_compat import OpenAICompatClient
from steadyflow.spec.models import FieldSpec, ModelSpec, Price
from steadyflow.spec.output_schema import compile_output

Triage = compile_output(
    {"category": FieldSpec(enum=["billing", "technical"]), "note": FieldSpec(type="string", max_length=50)}, "t"
)
EXPECTED = {
    "rate_limit": ErrorKind.RATE_LIMITED,
    "rate_limit_no_retry_after": ErrorKind.RATE_LIMITED,
    "http_500": ErrorKind.SERVER_ERROR,
    "http_502": ErrorKind.SERVER_ERROR,
    "http_503": ErrorKind.SERVER_ERROR,
    "timeout": ErrorKind.TIMEOUT,
    "reset": ErrorKind.CONNECTION,
    "truncated": ErrorKind.TRUNCATED,
    "empty": ErrorKind.EMPTY,
}
MESSAGES = [{"role": "user", "content": "my invoice is wrong"}]


def _client(server: ChaosServer, mode: str = "tools") -> OpenAICompatClient:
    spec = ModelSpec(
        provider="openai",
        base_url=server.base_url,
        mode=mode,
        timeout_s=1.0,
        price=Price(input_per_mtok=1.0, output_per_mtok=2.0),
    )
    return OpenAICompatClient("m", spec, concurrency=4)


async def _generate(client: OpenAICompatClient, reasks: int = 0) -> tuple[BaseModel, list]:
    try:
        return await client.generate(MESSAGES, Triage, reasks=reasks, rung=0)
    finally:
        await client.aclose()


@pytest.mark.parametrize("mode", ["tools", "json_schema", "json"])
def test_clean_answer_is_schema_valid_and_costed(chaos: ChaosServer, mode: str) -> None:
    output, attempts = asyncio.run(_generate(_client(chaos, mode)))
    assert isinstance(output, Triage)
    assert len(attempts) == 1 and attempts[0].ok and attempts[0].tokens_in > 0 and attempts[0].cost_usd > 0


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_fault_is_classified(chaos: ChaosServer, fault: str) -> None:
    chaos.script.append({"fault": fault})
    with pytest.raises(ModelCallError) as caught:
        asyncio.run(_generate(_client(chaos)))
    assert caught.value.kind == EXPECTED[fault]
    assert len(caught.value.attempts) == 1  # the SDK's own retries are off
    assert len(chaos.requests) == 1
    if fault == "rate_limit":
        assert caught.value.retry_after == 1.0
    if fault == "rate_limit_no_retry_after":
        assert caught.value.retry_after is None


@pytest.mark.parametrize("fault", ["malformed", "wrong_type"])
def test_invalid_output_is_reasked_with_the_error_and_both_attempts_are_costed(chaos: ChaosServer, fault: str) -> None:
    chaos.script.extend([{"fault": fault}, {}])
    output, attempts = asyncio.run(_generate(_client(chaos), reasks=1))
    assert isinstance(output, Triage)
    assert [a.error_kind for a in attempts] == ["invalid_output", None]
    assert all(a.tokens_in > 0 for a in attempts)
    reask = chaos.requests[1]["messages"]
    assert len(reask) > len(chaos.requests[0]["messages"])  # the validation error went back to the model


def test_reasks_are_bounded(chaos: ChaosServer) -> None:
    chaos.script.extend([{"fault": "wrong_type"}] * 5)
    with pytest.raises(ModelCallError) as caught:
        asyncio.run(_generate(_client(chaos), reasks=2))
    assert caught.value.kind == ErrorKind.INVALID_OUTPUT
    assert len(chaos.requests) == 3 and len(caught.value.attempts) == 3


def test_client_errors_are_the_callers_fault() -> None:
    server = ChaosServer(ChaosConfig()).start()
    try:
        spec = ModelSpec(provider="openai", base_url=server.base_url.replace("/v1", "/nope"), timeout_s=1.0)
        with pytest.raises(ModelCallError) as caught:
            asyncio.run(_generate(OpenAICompatClient("m", spec, 1)))
        assert caught.value.kind == ErrorKind.CLIENT_ERROR
    finally:
        server.stop()


def test_config_refuses_unknown_faults_and_rates_over_one() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        ChaosConfig(faults={"gremlins": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        ChaosConfig(faults={"429": 0.7, "500": 0.5})
    assert set(EXPECTED) | {"malformed", "wrong_type"} == set(FAULTS)
