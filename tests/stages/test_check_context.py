"""The re-ask checks' document travels with each model call, and a document is never rendered as a template.

A loopback server holds its first answers until both documents' requests have arrived, so both
calls are in flight at once: each document's check must still see its own document.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from steadyflow.core.document import Document
from steadyflow.spec import load_pipeline
from steadyflow.validators.base import CHECKS, Finding, validator
from tests.conftest import run_stage

TEXTS = {
    "d0": "Total {{ 7*7 }} due; {% for x in range(3) %}{{ x }}{% endfor %} {# keep #}\n    indented tail\n",
    "d1": "{% raw %}not raw{% endraw %} and {{ config }} {{ ''.__class__ }}\n\n",
}


class _Recorder(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint: the first two requests wait for each other; every answer is a tool call."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []
        self.both_in_flight = threading.Barrier(2, timeout=20)
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            first = len(self.server.bodies) <= 2
        if first:
            self.server.both_in_flight.wait()  # both documents' first calls are open before either is answered
        doc_id = re.search(r"Doc (d\d):", body["messages"][1]["content"]).group(1)  # type: ignore[union-attr]
        # first answer: a summary the check refuses (a re-ask); the re-ask: the document's own id
        summary = "not yet" if first else doc_id
        tool = body["tools"][0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": tool, "arguments": json.dumps({"summary": summary})},
                }
            ],
        }
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_each_document_reaches_the_model_unrendered_and_its_checks_see_it(tmp_path: Path, recorder: _Recorder) -> None:
    seen: list[tuple[str, str, str]] = []
    file = tmp_path / "p.yaml"
    file.write_text(f"""
pipeline: context
models:
  m: {{provider: openai, base_url: "http://127.0.0.1:{recorder.server_address[1]}/v1", timeout_s: 30}}
stages:
  - id: s
    kind: ai
    input: {{injection: "off"}}
    prompt: {{template: "Doc {{{{ id }}}}: {{{{ text }}}}"}}
    output: {{summary: {{type: string}}}}
    validate: [{{layer: semantic, check: names_its_document, on_fail: reask}}]
    ladder: [{{model: m, reasks: 1, retries: 0}}]
""")
    with CHECKS.scoped():

        @validator("names_its_document")
        def names_its_document(params: dict[str, Any], output: dict[str, Any], context: Any) -> Finding:
            seen.append((context.doc_id, context.text, output["summary"]))
            return Finding(output["summary"] == context.doc_id, "the summary must be the document's id")

        docs = [Document(doc_id, text, "mem") for doc_id, text in TEXTS.items()]
        records = run_stage(load_pipeline(file), "s", docs, concurrency=2)
    for record, doc in zip(records, docs, strict=True):
        assert (record.status, doc.outputs["s"]) == ("validated", {"summary": doc.id})
        assert [(v.check, v.action) for v in record.verdicts if not v.passed] == [("names_its_document", "reask")]
        assert [v.action for v in record.verdicts if v.check == "names_its_document" and v.passed] == ["pass"]
    # every check ran with its own document: the refused first answers, the accepted re-asks, and the final pass
    # (a plugin re-ask check runs again there: only built-in checks' verdicts from the parse are reused)
    assert sorted(seen) == sorted([(d, TEXTS[d], "not yet") for d in TEXTS] + [(d, TEXTS[d], d) for d in TEXTS] * 2)
    sent = {body["messages"][1]["content"] for body in recorder.bodies[:2]}
    assert sent == {f"Doc {d}: {text}" for d, text in TEXTS.items()}  # byte for byte: nothing rendered, nothing trimmed
