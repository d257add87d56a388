"""OpenTelemetry traces of a run: run -> stage chunk -> document -> attempt, built from its decision records.

Off unless the pipeline (``telemetry: {otlp_endpoint: ...}``) or the standard environment
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``) names a collector; spans go
out over OTLP/HTTP, in batches, from a tracer provider of our own (the process's global one is left
to the user). A document's and an attempt's spans are made when its chunk's stage ends, from its
decision record, at the times the record gives: so traces hold what records hold (names, numbers,
verdicts, error kinds), never document text unless ``include_text`` asks, and a Dask worker's
chunks are traced like local ones.

Attributes follow OpenTelemetry's GenAI semantic conventions (``gen_ai.*``, ``error.type``) and
OpenInference's (``openinference.span.kind``, ``llm.*``), which trace UIs such as Arize Phoenix
show; steadyflow's own are ``steadyflow.*``. A collector that cannot be reached costs the run a few
seconds at most and a note in its summary, never its documents.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from steadyflow.spec.loader import LoadedPipeline

if TYPE_CHECKING:
    from steadyflow.runner.spans import RunTracer


def endpoint(configured: str | None, env: dict[str, str] | None = None) -> str | None:
    """The OTLP/HTTP traces URL a run exports to, or None for no traces.

    The pipeline's ``otlp_endpoint`` wins; then ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as given) and
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` added), as every OpenTelemetry SDK reads them.
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn traces off.
    """
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if configured:
        return _traces_path(configured)
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return _traces_path(env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip())
    return None


def _traces_path(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def open_tracer(pipeline: LoadedPipeline, run_id: str, resumed: bool, key: Any) -> RunTracer | None:
    """The run's tracer, its root span started; None when no collector is named (nothing is imported then)."""
    if endpoint(pipeline.spec.telemetry.otlp_endpoint) is None:
        return None
    from steadyflow.runner.spans import RunTracer  # OpenTelemetry's SDK and exporter cost ~70 ms to import

    return RunTracer.open(pipeline, run_id, resumed, key)
