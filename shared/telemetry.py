"""OpenTelemetry traces of the gateway and the model service, off unless asked for.

`Telemetry.from_environ` reads OpenTelemetry's own variables: with no
`OTEL_EXPORTER_OTLP_ENDPOINT` (nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or with
`OTEL_SDK_DISABLED=true`, it returns None and nothing is instrumented, so the request path runs
exactly as without OpenTelemetry. Otherwise spans go in batches to that endpoint over OTLP
(HTTP/protobuf); the exporter's other variables (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`),
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` apply as
OpenTelemetry documents them.

What is traced (the official instrumentations, no span written by hand):
- one server span per request of either app (`opentelemetry-instrumentation-fastapi`, without
  its per-message `receive`/`send` spans; health probes and `/metrics` left out), continuing the
  client's W3C `traceparent`;
- one client span per attempt of the gateway towards an instance (the aiohttp client's
  `TraceConfig` from `opentelemetry-instrumentation-aiohttp-client`), which sends the
  `traceparent` on to the instance; the gateway adds which model, instance and attempt it was.
No header is recorded (the instance secret and `Authorization` never reach a span); URLs are
recorded without credentials.

`log_filter()` puts the current trace and span id into every log record (`trace_id`,
`span_id`), which the JSON log lines then carry.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

__all__ = ["Telemetry", "tracing_requested"]

#: Paths never traced: probes every two seconds would bury the requests.
EXCLUDED_PATHS = "/health,/metrics"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _traces_endpoint(environ: Mapping[str, str]) -> str:
    if endpoint := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return endpoint
    return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"


class _TraceIds(logging.Filter):
    """Adds the current span's trace and span id to each record (when a span is current)."""

    def __init__(self) -> None:
        super().__init__()
        from opentelemetry import trace  # only once tracing is on

        self._current_span = trace.get_current_span

    def filter(self, record: logging.LogRecord) -> bool:
        context = self._current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class Telemetry:
    """One process's tracer provider and what instruments with it."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    @classmethod
    def from_environ(cls, service_name: str, environ: Mapping[str, str] | None = None) -> "Telemetry | None":
        """Tracing as OpenTelemetry's variables in `environ` ask for, named `service_name`
        unless `OTEL_SERVICE_NAME` says otherwise; None when they ask for none."""
        environ = os.environ if environ is None else environ
        if not tracing_requested(environ):
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_endpoint(environ))))
        return cls(provider)

    def instrument_app(self, app: Any) -> None:
        """A server span for each request of `app` (a FastAPI app, before it first serves)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.provider, excluded_urls=EXCLUDED_PATHS,
                                           exclude_spans=["receive", "send"])

    def client_trace_config(self, request_hook: Callable[[Any, Any], None] | None = None,
                            response_hook: Callable[[Any, Any], None] | None = None) -> Any:
        """An aiohttp `TraceConfig`: a client span per request, and the `traceparent` sent on."""
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        return create_trace_config(request_hook=request_hook, response_hook=response_hook,
                                   tracer_provider=self.provider)

    @staticmethod
    def log_filter() -> logging.Filter:
        return _TraceIds()

    def shutdown(self) -> None:
        """Send what is still batched, then stop."""
        self.provider.shutdown()
