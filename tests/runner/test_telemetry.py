"""A run's OpenTelemetry spans, received by an OTLP/HTTP receiver on loopback that decodes them as a collector does.

Phoenix, a collector users run, is tested in test_phoenix.py (slow); these check the spans themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from steadyflow.chaos.server import ChaosConfig, ChaosServer
from steadyflow.runner.batch import run_local
from steadyflow.runner.run import RunOptions
from steadyflow.runner.telemetry import endpoint
from steadyflow.spec.loader import load_pipeline
from tests.conftest import ROOT, free_port

SECRET = "Zanzibar-7731 wrote about the invoice"
DOCS = 12


class Receiver:
    """Collects the spans of every OTLP/HTTP export request (protobuf) sent to it."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.raw = b""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.raw += body
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    receiver.resources.append(_attributes(resource_spans.resource.attributes))
                    for scope in resource_spans.scope_spans:
                        receiver.spans += [_span(s) for s in scope.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


def _span(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "id": span.span_id.hex(),
        "parent": span.parent_span_id.hex() or None,
        "trace": span.trace_id.hex(),
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "status": span.status.code,
        "attributes": _attributes(span.attributes),
        "events": [(e.name, _attributes(e.attributes)) for e in span.events],
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def pipeline(folder: Path, base_url: str, telemetry: str, redact: bool = False) -> Path:
    (folder / "docs.jsonl").write_text(
        "".join(
            json.dumps({"id": f"customer-{i}@example.com", "text": f"{SECRET} number {i}"}) + "\n" for i in range(DOCS)
        )
    )
    (folder / "p.yaml").write_text(f"""
pipeline: traced
models:
  small: {{provider: openai, base_url: "{base_url}", model: chaos-1, timeout_s: 10}}
source: {{kind: jsonl, path: docs.jsonl}}
stages:
  - id: triage
    kind: ai
    input: {{redact_pii: {"[EMAIL_ADDRESS]" if redact else "null"}}}
    prompt: {{template: "Triage: {{{{ text }}}}"}}
    output:
      category: {{enum: [billing, technical]}}
      summary: {{type: string, max_length: 100}}
    validate:
      - {{layer: business, check: rule, rule: "output.category == 'billing'", on_fail: reask}}
    ladder:
      - {{model: small, reasks: 1, retries: 0}}
      - {{default: {{category: billing, summary: "needs a person"}}, review: true}}
run: {{output: out, chunk_size: 5, check_workers: 0}}
sink: {{kind: jsonl, path: out.jsonl}}
telemetry: {telemetry}
""")
    return folder / "p.yaml"


def traced_run(tmp_path: Path, telemetry: str) -> Any:
    server = ChaosServer(ChaosConfig(seed=5)).start()
    try:
        return run_local(load_pipeline(pipeline(tmp_path, server.base_url, telemetry)), RunOptions(run_id="r1"))
    finally:
        server.stop()


def test_a_run_sends_run_chunk_document_and_attempt_spans_without_text(tmp_path: Path, receiver: Receiver) -> None:
    summary = traced_run(tmp_path, f"{{otlp_endpoint: '{receiver.url}', project: triage-prod}}")
    assert summary.notes == []
    spans = {s["id"]: s for s in receiver.spans}
    roots = [s for s in receiver.spans if s["parent"] is None]
    assert [r["name"] for r in roots] == ["run traced"]
    run = roots[0]
    assert run["attributes"]["steadyflow.run.id"] == "r1" and run["attributes"]["steadyflow.documents"] == DOCS
    assert {s["trace"] for s in receiver.spans} == {run["trace"]}
    chunks = [s for s in receiver.spans if s["parent"] == run["id"]]
    assert sorted(c["name"] for c in chunks) == ["triage chunk 0", "triage chunk 1", "triage chunk 2"]
    documents = [s for s in receiver.spans if s["parent"] in {c["id"] for c in chunks}]
    assert len(documents) == DOCS and {d["name"] for d in documents} == {"triage document"}
    attempts = [s for s in receiver.spans if s["parent"] in {d["id"] for d in documents}]
    calls = [a for a in attempts if a["name"] == "chat chaos-1"]
    assert len(calls) == sum(d["attributes"]["steadyflow.attempts"] for d in documents) - sum(
        1 for a in attempts if a["name"] != "chat chaos-1"
    )
    for call in calls:
        attributes = call["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.request.model"] == "chaos-1"
        assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["steadyflow.rung"] == 0
        parent = spans[call["parent"]]
        # within its document (a call's start is kept to the millisecond)
        assert parent["start"] - 1_000_000 <= call["start"] <= call["end"] <= parent["end"] + 1_000_000
    # the rule fails for half the answers: a re-ask is an attempt with its error type, and its verdict an event
    assert any(c["attributes"].get("error.type") == "invalid_output" for c in calls)
    assert any(
        name == "check rule" and not attrs["steadyflow.check.passed"] for d in documents for name, attrs in d["events"]
    )
    keys = {d["attributes"]["steadyflow.document.key"] for d in documents}
    assert len(keys) == DOCS and not any("@" in key for key in keys)  # the decision log's HMAC, never the id
    assert receiver.resources[0]["service.name"] == "triage-prod"
    assert receiver.resources[0]["openinference.project.name"] == "triage-prod"
    assert b"Zanzibar" not in receiver.raw and b"example.com" not in receiver.raw


def test_include_text_puts_the_document_and_its_output_in_its_span(tmp_path: Path, receiver: Receiver) -> None:
    traced_run(tmp_path, f"{{otlp_endpoint: '{receiver.url}', include_text: true}}")
    documents = [s for s in receiver.spans if s["name"] == "triage document"]
    assert all(d["attributes"]["input.value"].startswith(SECRET) for d in documents)
    assert all(json.loads(d["attributes"]["output.value"])["category"] == "billing" for d in documents)


def test_the_standard_environment_names_the_collector(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    traced_run(tmp_path, "{}")
    assert len([s for s in receiver.spans if s["name"] == "triage document"]) == DOCS


def test_no_collector_named_means_no_spans_and_no_opentelemetry(tmp_path: Path) -> None:
    code = (
        "import sys; from steadyflow.runner.run import Run; "
        "print(any(m.startswith('opentelemetry.sdk') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert endpoint(None, {}) is None


@pytest.mark.parametrize(
    ("configured", "env", "url"),
    [
        ("http://c:4318", {}, "http://c:4318/v1/traces"),
        ("http://c:4318/v1/traces", {}, "http://c:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318/"}, "http://e:4318/v1/traces"),
        (
            None,
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://e"},
            "http://t/x",
        ),
        ("http://c:4318", {"OTEL_SDK_DISABLED": "true"}, None),
        ("http://c:4318", {"OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_which_collector(configured: str | None, env: dict[str, str], url: str | None) -> None:
    assert endpoint(configured, env) == url


def test_an_unreachable_collector_costs_a_note_not_the_run(tmp_path: Path) -> None:
    port = free_port()
    summary = traced_run(tmp_path, f"{{otlp_endpoint: 'http://127.0.0.1:{port}'}}")
    assert summary.outputs == DOCS
    (note,) = summary.notes
    found = re.fullmatch(rf"telemetry: (\d+) of (\d+) spans did not reach http://127.0.0.1:{port}/v1/traces", note)
    assert found is not None and found[1] == found[2] and int(found[1]) >= 2 + 2 * DOCS


def test_include_text_with_redaction_is_refused_where_it_is_written(tmp_path: Path) -> None:
    file = pipeline(
        tmp_path, "http://127.0.0.1:9/v1", "{otlp_endpoint: 'http://127.0.0.1:9', include_text: true}", True
    )
    result = subprocess.run(
        [sys.executable, "-m", "steadyflow.cli", "validate", str(file)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "include_text" in line]
    line_no = next(i for i, text in enumerate(file.read_text().splitlines(), 1) if text.startswith("telemetry:"))
    assert line.startswith(f"{file}:{line_no}:") and "unredacted" in line


def test_a_collector_url_with_credentials_or_a_bad_port_is_refused(tmp_path: Path) -> None:
    for url, said in (
        ("http://user:pw@collector:4318", "credentials go in OTEL_EXPORTER_OTLP_HEADERS"),
        ("http://collector:99999", "port is not a number from 1 to 65535"),
        ("ftp://collector", "give an http:// or https:// URL"),
    ):
        file = pipeline(tmp_path, "http://127.0.0.1:9/v1", f"{{otlp_endpoint: '{url}'}}")
        result = subprocess.run(
            [sys.executable, "-m", "steadyflow.cli", "validate", str(file)], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 2 and said in result.stderr and "pw" not in result.stderr.replace(said, "")


def test_long_texts_are_cut_in_spans(tmp_path: Path, receiver: Receiver) -> None:
    server = ChaosServer(ChaosConfig(seed=5)).start()
    try:
        file = pipeline(tmp_path, server.base_url, f"{{otlp_endpoint: '{receiver.url}', include_text: true}}")
        (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "long", "text": "word " * 10_000}) + "\n")
        run_local(load_pipeline(file), RunOptions(run_id="r1"))
    finally:
        server.stop()
    (document,) = [s for s in receiver.spans if s["name"] == "triage document"]
    assert len(document["attributes"]["input.value"]) == 32_768


def test_a_collector_switched_off_by_the_environment_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    summary = traced_run(tmp_path, "{otlp_endpoint: 'http://127.0.0.1:9'}")
    assert summary.notes == ["telemetry: off (OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none in the environment)"]
