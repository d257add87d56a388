"""The local provider on the real embedded model: grammar, re-asks, sharing, stopping."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, field_validator

from steadyflow.audit.records import Attempt
from steadyflow.providers.errors import ModelCallError
from steadyflow.providers.local_server import LocalEndpoints, RunServer, answers
from steadyflow.providers.openai_compat import LocalClient
from steadyflow.spec.models import ModelSpec
from tests.conftest import host_children, running, wait_gone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(local_gguf: Path) -> Iterator[RunServer]:
    with RunServer(local_gguf, 2048) as running_server:
        yield running_server


class Category(BaseModel):
    category: Literal["billing", "technical"]


class Shout(BaseModel):
    word: str = Field(description="a single word")

    @field_validator("word")
    @classmethod
    def _capitals(cls, value: str) -> str:
        if value != value.upper():
            raise ValueError("the word must be written in CAPITAL letters only")
        return value


def _ask(server: RunServer, prompt: str, model: type[BaseModel], reasks: int) -> tuple[BaseModel | None, list[Attempt]]:
    async def go() -> tuple[BaseModel | None, list[Attempt]]:
        client = LocalClient("small", ModelSpec(provider="local", max_tokens=60, timeout_s=60), 4, server.base_url)
        try:
            return await client.generate([{"role": "user", "content": prompt}], model, reasks=reasks, rung=0)
        except ModelCallError as exc:
            return None, exc.attempts
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_schema_grammar_constrains_what_the_model_can_say(server: RunServer) -> None:
    # Unconstrained, a small model copies the value it is told to; the grammar only admits the enum.
    output, attempts = _ask(
        server, 'Answer with exactly this JSON and nothing else: {"category": "banana"}', Category, reasks=0
    )
    assert isinstance(output, Category) and output.category in ("billing", "technical")
    assert len(attempts) == 1 and attempts[0].error_kind is None and attempts[0].tokens_out > 0


def test_instructor_reasks_on_top_of_the_grammar(server: RunServer) -> None:
    # A rule no JSON schema can express: the first answer breaks it, so instructor re-asks with the error.
    output, attempts = _ask(server, "Reply with the word hello, written in lowercase letters.", Shout, reasks=2)
    assert len(attempts) >= 2, attempts
    assert attempts[0].error_kind == "invalid_output" and "word" in (attempts[0].error or "")
    assert all(a.error_kind in (None, "invalid_output") for a in attempts)  # every answer was JSON of the schema
    assert output is None or output.word.isupper()


def test_one_server_is_shared_by_every_local_model_of_a_run(local_gguf: Path) -> None:
    same = ModelSpec(provider="local", model_path=str(local_gguf))
    models = {
        "a": same,
        "b": same,
        "c": ModelSpec(provider="local", base_url="http://127.0.0.1:9/v1"),
        "d": ModelSpec(provider="openai"),
    }
    before = set(host_children(os.getpid()))
    with LocalEndpoints(models) as urls:
        assert set(urls) == {"a", "b"} and urls["a"] == urls["b"] and answers(urls["a"])
        [pid] = set(host_children(os.getpid())) - before
    assert wait_gone(pid, 15) and not answers(urls["a"], 1)


def test_the_server_stops_when_the_run_raises(local_gguf: Path) -> None:
    pids: list[int] = []
    before = set(host_children(os.getpid()))

    def run_that_raises() -> None:
        with LocalEndpoints({"small": ModelSpec(provider="local")}) as urls:
            pids.extend(set(host_children(os.getpid())) - before)
            assert answers(urls["small"])
            raise RuntimeError("stage blew up")

    with pytest.raises(RuntimeError, match="stage blew up"):
        run_that_raises()
    assert len(pids) == 1 and wait_gone(pids[0], 15)


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))  # right magic, nothing a loader can use
    from steadyflow.providers.local_model import LocalModelError

    before = set(host_children(os.getpid()))
    with pytest.raises(LocalModelError, match="exited with code"), RunServer(broken):
        pass
    assert all(not running(p) for p in set(host_children(os.getpid())) - before)


def test_log_probabilities_come_only_from_a_server_asked_to_keep_them(server: RunServer, local_gguf: Path) -> None:
    # The module's server keeps no logits (what a run starts unless a pipeline needs log-probabilities):
    # a request for them is refused there, so the client never sends one to it (see logprob_models).
    async def ask(url: str) -> tuple[BaseModel, list[tuple[str, float]]]:
        client = LocalClient("small", ModelSpec(provider="local", max_tokens=30, timeout_s=60), 1, url)
        tokens: list[tuple[str, float]] = []
        try:
            output, _ = await client.generate(
                [{"role": "user", "content": "My invoice is wrong."}], Category, 0, 0, logprobs=tokens
            )
        finally:
            await client.aclose()
        return output, tokens

    with pytest.raises(ModelCallError):
        asyncio.run(ask(server.base_url))
    with RunServer(local_gguf, 2048, logprobs=True) as keeping:
        output, tokens = asyncio.run(ask(keeping.base_url))
    assert tokens and all(logprob <= 0 for _, logprob in tokens)
    from steadyflow.providers.confidence import field_confidence

    confidence = field_confidence(tokens, output.model_dump(), ["category"])
    assert 0 < confidence["category"] <= 1
