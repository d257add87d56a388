"""Tokens are counted before a prompt is sent (issue 12, item 4).

A prompt longer than the context is skipped or cut, with the reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadyflow.audit.records import DecisionRecord
from steadyflow.chaos.server import ChaosServer
from steadyflow.core.document import Document
from steadyflow.providers.errors import ModelCallError
from steadyflow.providers.tokens import EstimateCounter, VocabCounter, fit_prompt
from steadyflow.spec import load_pipeline
from tests.conftest import run_stage

PIPELINE = """
pipeline: overflow
models:
  m: {{provider: openai, base_url: "{url}", timeout_s: 5, max_tokens: 200{model}}}
stages:
  - id: s
    kind: ai
    input: {{max_chars: 200000{input}}}
    prompt: {{template: "Classify this ticket.\\n{{{{ text }}}}\\nEnd of ticket."}}
    output: {{category: {{enum: [billing, technical]}}}}
    ladder: [{ladder}]
"""
LONG = "My invoice shows a charge twice and the refund has not arrived yet. " * 200  # ~13,600 characters
SECRET = "zebra-4471-secret"


def _run(
    tmp_path: Path,
    url: str,
    texts: list[str],
    model: str = ", context_tokens: 1024",
    input_spec: str = "",
    ladder: str = "{model: m, reasks: 0, retries: 0}",
) -> list[DecisionRecord]:
    file = tmp_path / "p.yaml"
    file.write_text(PIPELINE.format(url=url, model=model, input=input_spec, ladder=ladder))
    docs = [Document(f"d{i}", text, "mem") for i, text in enumerate(texts)]
    return run_stage(load_pipeline(file), "s", docs, concurrency=2)


def test_a_prompt_longer_than_the_declared_context_is_not_sent_and_says_why(tmp_path: Path, chaos: ChaosServer) -> None:
    short, long = _run(tmp_path, chaos.base_url, ["a short ticket about a refund", LONG + SECRET])
    assert short.status == "validated"
    assert long.status == "quarantined" and long.reason is not None
    assert long.reason.startswith("prompt exceeds context (") and "> 824 tokens" in long.reason, long.reason
    [attempt] = long.attempts
    assert attempt.error_kind == "context_overflow" and attempt.tokens_in == 0
    assert len(chaos.requests) == 1 and SECRET not in json.dumps(list(chaos.requests))  # only the short one went out
    assert SECRET not in json.dumps([long.reason, attempt.error])


def test_the_ladder_moves_on_to_rules_when_a_model_rung_cannot_take_the_prompt(
    tmp_path: Path, chaos: ChaosServer
) -> None:
    ladder = (
        "{model: m, reasks: 0}, {rules: {fields: {category: {keywords: {billing: [invoice]}, default: technical}}}}"
    )
    [record] = _run(tmp_path, chaos.base_url, [LONG], ladder=ladder)
    assert record.status == "rules"
    assert [a.error_kind for a in record.attempts] == ["context_overflow", None]
    assert not chaos.requests


def test_truncate_cuts_the_document_not_the_instructions_and_records_it(tmp_path: Path, chaos: ChaosServer) -> None:
    [record] = _run(tmp_path, chaos.base_url, [LONG + SECRET], input_spec=", on_overflow: truncate")
    assert record.status == "validated"
    [sent] = list(chaos.requests)
    user = sent["messages"][-1]["content"]
    assert user.startswith("Classify this ticket.\n") and user.endswith(
        "\nEnd of ticket."
    )  # the instructions stay whole
    assert SECRET not in user and len(user) < len(LONG)
    [note] = [v for v in record.verdicts if v.check == "context"]
    assert note.action == "truncate" and note.message.startswith("document truncated to ") and "<= 1024" in note.message
    counted = EstimateCounter().count(sent["messages"])
    assert counted + 200 <= 1024  # what was sent fits (the schema travels apart, as a tool, and was counted too)


def test_no_declared_context_means_no_check(tmp_path: Path, chaos: ChaosServer) -> None:
    [record] = _run(tmp_path, chaos.base_url, [LONG], model="")
    assert record.status == "validated" and len(chaos.requests) == 1


class _Refuses(BaseHTTPRequestHandler):
    """An endpoint that refuses every prompt as too long.

    It words the refusal the way llama-cpp-python's server does (quoting nothing).
    """

    body: ClassVar[dict[str, Any]] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        data = json.dumps(self.body).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


LLAMA_CPP_PYTHON = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
        f"(1900 in the messages, 200 in the completion). {SECRET}",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
LLAMA_CPP = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5000,
        "n_ctx": 4096,
    }
}
OPENAI = {
    "error": {
        "message": "This model's maximum context length is 128,000 tokens. However, your messages resulted in "
        "130,512 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (LLAMA_CPP_PYTHON, "prompt exceeds context (1900 + max_tokens 200 > 2048 tokens, said the endpoint)"),
        (LLAMA_CPP, "prompt exceeds context (5000 > 4096 tokens, said the endpoint)"),
        (OPENAI, "prompt exceeds context (130512 > 128000 tokens, said the endpoint)"),
        ({"error": {"message": "Bad request", "type": "invalid_request_error"}}, "HTTP 400"),
    ],
    ids=["llama-cpp-python", "llama.cpp", "openai", "other"],
)
def test_a_400_for_a_long_prompt_is_a_context_overflow_with_its_numbers(
    tmp_path: Path, refusing: ThreadingHTTPServer, body: dict[str, Any], reason: str
) -> None:
    _Refuses.body = body
    [record] = _run(tmp_path, f"http://127.0.0.1:{refusing.server_address[1]}/v1", ["short"], model="")
    [attempt] = record.attempts
    assert attempt.error == reason
    assert attempt.error_kind == ("client_error" if reason == "HTTP 400" else "context_overflow")
    assert SECRET not in json.dumps([record.reason, attempt.error])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000), st.integers(min_value=0, max_value=1200))
def test_the_estimate_cuts_to_at_most_the_tokens_asked(text: str, tokens: int) -> None:
    counter = EstimateCounter()
    cut = counter.cut(text, tokens)
    assert text.startswith(cut) and counter.count_text(cut) <= tokens
    assert counter.count_text(text) >= len(text) / 3


def test_a_template_that_repeats_the_text_is_cut_until_it_fits() -> None:
    counter = EstimateCounter()

    def render(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{text}\n---\n{text}"}]

    fit = fit_prompt(counter, render(LONG), [], 1024, 200, LONG, render)
    assert fit.messages is not None and fit.truncated_to is not None
    assert counter.count(fit.messages) <= 824


# --- the embedded model's own tokenizer, against the server's usage ---------------------------------


@pytest.mark.slow
def test_the_local_vocabulary_counts_what_the_server_counts(local_gguf: Path) -> None:
    from steadyflow.providers.local_server import RunServer

    counter = VocabCounter(local_gguf)
    prompts = [
        [{"role": "user", "content": "Hello"}],
        [{"role": "system", "content": "You classify tickets."}, {"role": "user", "content": LONG[:3000]}],
        [
            {"role": "system", "content": "Réponds en JSON."},
            {"role": "user", "content": 'Grüße, 東京 ✓ <|im_end|> {"a": 1}\n\n\ttabs'},
        ],
    ]

    async def usage(base_url: str, messages: list[dict[str, str]]) -> int:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
        try:
            reply = await client.chat.completions.create(model="local", messages=messages, max_tokens=1)  # type: ignore[arg-type]
            assert reply.usage is not None
            return reply.usage.prompt_tokens
        finally:
            await client.close()

    with RunServer(local_gguf, 2048) as server:
        for messages in prompts:
            assert counter.count(messages) == asyncio.run(usage(server.base_url, messages))
        # a prompt longer than the context, sent anyway (no check on a raw client): the refusal has its numbers
        with pytest.raises(openai.BadRequestError) as refused:
            asyncio.run(usage(server.base_url, [{"role": "user", "content": LONG}]))
    from steadyflow.providers.errors import classify

    failed = classify(refused.value)
    assert isinstance(failed, ModelCallError) and failed.kind == "context_overflow"
    assert failed.message.startswith(f"prompt exceeds context ({counter.count([{'role': 'user', 'content': LONG}])} + ")
