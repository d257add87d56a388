"""The spans of a traced run (imported only when traces are on: see :mod:`steadyflow.runner.telemetry`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from steadyflow.audit.records import Attempt, DecisionRecord
from steadyflow.core.document import Document
from steadyflow.runner.telemetry import endpoint
from steadyflow.spec.loader import LoadedPipeline
from steadyflow.spec.models import ModelSpec

_MAX_TEXT = 32_768
"""Characters an attribute keeps (a document's text with ``include_text``)."""
_TIMEOUT_S = 5.0
"""An export waits at most this long for the collector."""
_PAUSE_S = 30.0
"""After a failed export, batches are dropped (and counted) for this long instead of each waiting again."""
_QUIET = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk._shared_internal",
)
"""Loggers that print a traceback per failed export: the run's summary says it in one line instead."""


class _Counted(SpanExporter):
    """Counts what reached the collector; after a failure, drops batches for a while instead of waiting on each."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.sent = 0
        self.failed = 0
        self._paused_until = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if time.monotonic() < self._paused_until:
            self.failed += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter must not take the run with it
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.sent += len(spans)
        else:
            self.failed += len(spans)
            self._paused_until = time.monotonic() + _PAUSE_S
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _ns(unix_s: float) -> int:
    return int(unix_s * 1e9)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Attributes without None (OpenTelemetry drops them with a warning)."""
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class RunTracer:
    """The spans of one run; :meth:`open` returns None when traces are off."""

    provider: TracerProvider
    exporter: _Counted
    url: str
    run_span: Span
    include_text: bool
    models: dict[str, _Model]
    """Pipeline model name -> what ``gen_ai.*`` and ``server.*`` say of its calls."""
    key: Any
    """The decision log's document key (an HMAC of the id): spans name documents as records do."""
    made: int = 1
    """Spans made so far (the run's own included): those neither sent nor failed were dropped."""
    _ended: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, pipeline: LoadedPipeline, run_id: str, resumed: bool, key: Any) -> RunTracer | None:
        """Start the run's span (its root), or None when no collector is named."""
        settings = pipeline.spec.telemetry
        url = endpoint(settings.otlp_endpoint)
        if url is None:
            return None
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        project = settings.project or pipeline.spec.pipeline
        names = {"service.name": project, "openinference.project.name": project}
        resource = Resource.create({**names, "steadyflow.pipeline": pipeline.spec.pipeline})
        exporter = _Counted(OTLPSpanExporter(endpoint=url, timeout=_TIMEOUT_S))
        # with text, an attribute is cut at 32 KiB and a request holds at most 128 spans: under the 20 MiB a
        # collector takes by default (OpenTelemetry Collector), and a queue that is not gigabytes
        provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_attribute_length=_MAX_TEXT))
        batch = 128 if settings.include_text else 512
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=16_384, max_export_batch_size=batch, schedule_delay_millis=1000)
        )
        spec = pipeline.spec
        span = provider.get_tracer("steadyflow").start_span(
            f"run {spec.pipeline}",
            kind=SpanKind.INTERNAL,
            attributes={
                "openinference.span.kind": "CHAIN",
                "steadyflow.run.id": run_id,
                "steadyflow.pipeline": spec.pipeline,
                "steadyflow.pipeline.version": spec.version,
                "steadyflow.resumed": resumed,
            },
        )
        models = {name: _Model.of(name, model) for name, model in spec.models.items()}
        return cls(provider, exporter, url, span, settings.include_text, models, key)

    def chunk(
        self, stage: str, index: int, started: float, records: list[DecisionRecord], docs: list[Document]
    ) -> None:
        """Spans of one stage over one chunk (started at Unix time ``started``, ended now) and its documents."""
        tracer = self.provider.get_tracer("steadyflow")
        parent = trace.set_span_in_context(self.run_span)
        span = tracer.start_span(
            f"{stage} chunk {index}",
            context=parent,
            start_time=_ns(started),
            attributes={
                "openinference.span.kind": "CHAIN",
                "steadyflow.stage": stage,
                "steadyflow.chunk.index": index,
                "steadyflow.chunk.documents": len(docs),
            },
        )
        texts = {doc.id: doc for doc in docs} if self.include_text else {}
        for record in records:
            self._document(tracer, span, record, texts.get(record.doc_id))
            self.made += 1 + len(record.attempts)
        self.made += 1
        span.end(end_time=_ns(time.time()))

    def _document(self, tracer: trace.Tracer, chunk: Span, record: DecisionRecord, doc: Document | None) -> None:
        started = record.started_at or time.time()
        span = tracer.start_span(
            f"{record.stage_id} document",
            context=trace.set_span_in_context(chunk),
            start_time=_ns(started),
            attributes=_plain(document_attributes(record, self.key(record.doc_id))),
        )
        for verdict in record.verdicts:
            span.add_event(
                f"check {verdict.check}",
                attributes=_plain(
                    {
                        "steadyflow.check": verdict.check,
                        "steadyflow.check.layer": verdict.layer,
                        "steadyflow.check.passed": verdict.passed,
                        "steadyflow.check.action": verdict.action,
                        "steadyflow.check.message": verdict.message or None,
                        "steadyflow.rung": verdict.rung,
                    }
                ),
                timestamp=_ns(started),
            )
        if doc is not None:  # include_text: the pipeline asked for it
            span.set_attribute("input.value", doc.text)
            output = doc.outputs.get(record.stage_id)
            if output is not None:
                span.set_attribute("output.value", json.dumps(output, ensure_ascii=False, default=str))
                span.set_attribute("output.mime_type", "application/json")
        for attempt in record.attempts:
            self._attempt(tracer, span, attempt)
        if record.status == "quarantined":
            span.set_status(Status(StatusCode.ERROR, record.reason or "quarantined"))
        span.end(end_time=_ns(started + record.latency_ms / 1000))

    def _attempt(self, tracer: trace.Tracer, document: Span, attempt: Attempt) -> None:
        model = self.models.get(attempt.model or "") if attempt.kind == "model" else None
        name = f"chat {model.id}" if model is not None else (attempt.model or attempt.kind)
        span = tracer.start_span(
            name,
            context=trace.set_span_in_context(document),
            kind=SpanKind.CLIENT if model is not None else SpanKind.INTERNAL,
            start_time=_ns(attempt.started_at),
            attributes=_plain(attempt_attributes(attempt, model)),
        )
        if attempt.error_kind is not None:
            span.set_status(Status(StatusCode.ERROR, attempt.error_kind))
        span.end(end_time=_ns(attempt.started_at + attempt.latency_ms / 1000))

    def finish(self, totals: dict[str, Any] | None) -> str | None:
        """End the run's span (``totals`` of a finished run; None: it failed) and send what is left.

        Returns a one-line note for the run's summary when spans did not reach the collector.
        """
        if self._ended:
            return None
        self._ended = True
        span = self.run_span
        if totals is None:
            span.set_status(Status(StatusCode.ERROR, "the run did not finish (it can be resumed)"))
        else:
            span.set_attributes({f"steadyflow.{name}": value for name, value in totals.items()})
        span.end()
        self.provider.shutdown()  # flushes: bounded by the exporter's timeout and the pause after a failure
        lost = self.made - self.exporter.sent  # failed, dropped from a full queue, or left at shutdown
        if lost > 0:
            return f"telemetry: {lost} of {self.made} spans did not reach {shown(self.url)}"
        return None


def document_attributes(record: DecisionRecord, key: str) -> dict[str, Any]:
    """A document's span in one stage: what its record says, by name (no text)."""
    route = record.route or {}
    adaptive = route.get("adaptive") or {}
    failed = [f"{v.check}:{v.action}" for v in record.verdicts if not v.passed]
    return {
        "openinference.span.kind": "CHAIN",
        "steadyflow.run.id": record.run_id,
        "steadyflow.document.key": key,
        "steadyflow.stage": record.stage_id,
        "steadyflow.status": record.status,
        "steadyflow.rung": record.rung,
        "steadyflow.rung_label": record.rung_label,
        "steadyflow.review": record.review,
        "steadyflow.reason": record.reason,
        "steadyflow.cost_usd": round(record.cost_usd, 8),
        "steadyflow.tokens.input": record.tokens_in,
        "steadyflow.tokens.output": record.tokens_out,
        "steadyflow.attempts": len(record.attempts),
        "steadyflow.queue_ms": record.queue_ms,
        "steadyflow.prompt_version": record.prompt_version,
        "steadyflow.pipeline.version": record.pipeline_version,
        "steadyflow.checks.failed": failed,
        "steadyflow.checks.passed": [v.check for v in record.verdicts if v.passed],
        "steadyflow.route.entry": route.get("entry"),
        "steadyflow.route.class": route.get("complexity"),
        "steadyflow.route.score": route.get("score"),
        "steadyflow.route.why": adaptive.get("why"),
        "error.type": record.reason.split(":", 1)[0] if record.status == "quarantined" and record.reason else None,
    }


def attempt_attributes(attempt: Attempt, model: _Model | None) -> dict[str, Any]:
    """One attempt's span: GenAI conventions for a model call (trace UIs read them: Phoenix shows an LLM span), ours."""
    values: dict[str, Any] = {
        "steadyflow.rung": attempt.rung,
        "steadyflow.attempt.kind": attempt.kind,
        "steadyflow.model": attempt.model,
        "steadyflow.cost_usd": round(attempt.cost_usd, 8),
        "steadyflow.hedge": attempt.hedge,
        "steadyflow.waited_ms": attempt.waited_ms or None,
        "steadyflow.wait_reason": attempt.wait_reason,
        "steadyflow.server_ms": attempt.server_ms,
        "error.type": attempt.error_kind,
    }
    if model is None:
        return {"openinference.span.kind": "CHAIN" if attempt.kind != "cache" else "RETRIEVER", **values}
    answered = attempt.error_kind is None or attempt.tokens_in or attempt.tokens_out  # no usage: none to say
    return {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model.id,
        "gen_ai.response.model": attempt.response_model,
        "gen_ai.usage.input_tokens": attempt.tokens_in if answered else None,
        "gen_ai.usage.output_tokens": attempt.tokens_out if answered else None,
        "openai.response.system_fingerprint": attempt.system_fingerprint,
        "server.address": model.host,
        "server.port": model.port,
        **values,
    }


class _Model(NamedTuple):
    """What a model call's span says of its model: the id sent, the provider, the server (when the file names it)."""

    id: str
    provider: str
    host: str | None
    port: int | None

    @classmethod
    def of(cls, name: str, spec: ModelSpec) -> _Model:
        if spec.provider == "local":  # the embedded model: llama.cpp's server on a loopback port found at run time
            return cls(spec.model or name, "llama_cpp", None, None)
        if spec.base_url is None:  # the SDK's own default endpoint: named by the SDK, not repeated here
            return cls(spec.model or name, "openai", None, None)
        where = urlsplit(spec.base_url)
        try:
            port = where.port or (443 if where.scheme == "https" else 80)
        except ValueError:
            port = None
        return cls(spec.model or name, "openai", where.hostname, port)


def shown(url: str) -> str:
    """A URL as a note may show it: without user and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
