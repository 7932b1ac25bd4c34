"""OpenTelemetry across the gateway and a real model service (issue 11): a client's `traceparent`
kept through the gateway's server span, one client span per attempt (a failover shows two), the
model service's server span under the attempt that reached it, the ids in both apps' JSON logs,
all exported over OTLP/HTTP to a receiver this test runs, which decodes what it was sent."""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                        ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shared.telemetry import Telemetry
from tests.gateway.conftest import MODELS, gateway_env
from tests.harness import ManagedProcess, start_service, wait_until
from tests.loopback import LoopbackServer, QuietHandler

SMOL = MODELS[0]
INSTANCE_SECRET = "instance-secret-" + secrets.token_hex(8)
API_KEY_TEXT = "Bearer sk-should-never-be-traced"


def _value(any_value) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1: each POST's ExportTraceServiceRequest decoded
    with opentelemetry-proto into plain dicts (one per span)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(self.path, self.headers.get("Content-Type"), request)
                self.reply(200, {"Content-Type": "application/x-protobuf"},
                           ExportTraceServiceResponse().SerializeToString())

        self.server = LoopbackServer(Handler, "otlp-receiver")
        self.url = self.server.url

    def add(self, path: str, content_type: str | None, request: ExportTraceServiceRequest) -> None:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "service": resource.get("service.name"), "name": span.name, "kind": span.kind,
                            "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes}})

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def receiver():
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def _json_lines(proc: ManagedProcess) -> list[dict[str, Any]]:
    lines = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return lines


def test_tracing_is_off_without_an_endpoint():
    assert Telemetry.from_environ("arena-gateway", {}) is None
    assert Telemetry.from_environ("arena-gateway", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                                    "OTEL_SDK_DISABLED": "true"}) is None


def test_one_trace_from_the_client_through_the_gateway_and_its_attempts_to_the_model(tmp_path, receiver,
                                                                                     fake_upstreams, gateways):
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "ARENA_INSTANCE_SECRET": INSTANCE_SECRET}
    service = start_service(SMOL, "--log-format", "json", env=otel)
    broken = fake_upstreams()  # answers every completion 500: the gateway fails over to the model
    broken.control(reject={"status": 500, "error": {"message": "broken", "type": "server_error"}})
    try:
        gateway = gateways({**gateway_env(tmp_path, {SMOL: [broken.url, service.url]}), **otel})

        def ready() -> int:
            listed = httpx.get(gateway.url + "/api/instances", timeout=5).json()["data"]
            return len([i for i in listed if i["state"] == "ready"])

        wait_until(lambda: ready() == 2, 30, what="both instances ready")
        failover = None
        for n in range(16):  # until the balancer (random among idle instances) sent one to the broken one first
            trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
            answer = httpx.post(gateway.url + "/v1/chat/completions", timeout=60, json={
                "model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": f"Count to {n}."}]},
                headers={"traceparent": f"00-{trace_id}-{client_span}-01", "Authorization": API_KEY_TEXT})
            assert answer.status_code == 200, answer.text
            wait_until(lambda: any(s["service"] == f"arena-model-{SMOL}" for s in receiver.trace(trace_id)),
                       15, what="the model service's span")
            wait_until(lambda: any(s["service"] == "arena-gateway" and s["kind"] == Span.SPAN_KIND_SERVER
                                   for s in receiver.trace(trace_id)), 15, what="the gateway's server span")
            attempts = [s for s in receiver.trace(trace_id) if s["name"] == "upstream attempt"]
            if len(attempts) == 2:
                failover = (trace_id, client_span)
                break
            assert len(attempts) == 1 and attempts[0]["attributes"]["arena.attempt.status"] == 200
        assert failover is not None, "no request went to the broken instance first"
        trace_id, client_span = failover
        spans = receiver.trace(trace_id)

        [server] = [s for s in spans if s["service"] == "arena-gateway" and s["kind"] == Span.SPAN_KIND_SERVER]
        assert server["parent_id"] == client_span  # the client's trace and span, kept
        attempts = sorted((s for s in spans if s["name"] == "upstream attempt"),
                          key=lambda s: s["attributes"]["arena.attempt"])
        assert [a["kind"] for a in attempts] == [Span.SPAN_KIND_CLIENT] * 2
        assert all(a["parent_id"] == server["span_id"] and a["attributes"]["arena.model"] == SMOL for a in attempts)
        assert [a["attributes"]["arena.attempt"] for a in attempts] == [1, 2]
        assert [a["attributes"]["arena.attempt.status"] for a in attempts] == [500, 200]
        assert attempts[0]["attributes"]["arena.instance.id"] != attempts[1]["attributes"]["arena.instance.id"]
        [model_span] = [s for s in spans if s["service"] == f"arena-model-{SMOL}"]
        assert model_span["kind"] == Span.SPAN_KIND_SERVER and model_span["parent_id"] == attempts[1]["span_id"]

        # No secret in any span of any trace.
        recorded = json.dumps(receiver.spans)
        assert INSTANCE_SECRET not in recorded and "sk-should-never-be-traced" not in recorded

        # The ids in the JSON log lines of both apps.
        gateway_line = next(line for line in _json_lines(gateway)
                            if line.get("logger") == "gateway.access" and line.get("trace_id") == trace_id)
        assert gateway_line["span_id"] == server["span_id"] and gateway_line["attempts"] == 2
        service_line = next(line for line in _json_lines(service)
                            if line.get("logger") == "services.access" and line.get("trace_id") == trace_id)
        assert service_line["span_id"] == model_span["span_id"] and service_line["status"] == 200
    finally:
        service.stop()



def test_a_runners_children_get_opentelemetrys_variables_and_no_credentials():
    from scripts.child_env import gateway_env as runner_gateway_env, service_env

    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "x=1",
               "WORKFLOW_PAT": "ghp_secret", "TUNNELS_JSON": "{}"}
    for env in (service_env(environ), runner_gateway_env(environ)):
        assert env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "x=1"}
