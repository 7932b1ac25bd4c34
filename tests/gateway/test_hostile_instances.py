"""A malicious or broken instance against the gateway's real `UpstreamProxy` (issue 11, items
4 and 8): each instance here is a raw TCP server on 127.0.0.1 that answers as badly as it is
told to, so the proxy talks real HTTP to it (through its real client) in this test's loop."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

import pytest
from starlette.requests import Request

from gateway.auto_routing import AutoRouter
from gateway.balancing import make_balancer
from gateway.health_monitor import HealthMonitor, HealthPolicy
from gateway.instances import Instance, InstanceRegistry, InstanceState
from gateway.metrics import GatewayMetrics
from gateway.upstream import ProxyPolicy, RelayResponse, UpstreamProxy
from shared.catalogue import load_catalogue
from shared.errors import ApiError

CATALOGUE = load_catalogue()
MODEL = next(iter(CATALOGUE.models))
ANSWER = json.dumps({"id": "x", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()
SSE = b"data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}}]}\n\n"


def head(status: str = "200 OK", *lines: str) -> bytes:
    return ("HTTP/1.1 " + status + "\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode()


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = next((int(line.split(b":")[1]) for line in raw.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    await reader.readexactly(length)
    return True


async def answer(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve requests on one connection as `mode` says."""
    try:
        while await read_request(reader):
            if mode == "ok":
                writer.write(head("200 OK", "Content-Type: application/json", f"Content-Length: {len(ANSWER)}") + ANSWER)
            elif mode == "html":
                page = b"<script>alert(document.cookie)</script>"
                writer.write(head("200 OK", "Content-Type: text/html", f"Content-Length: {len(page)}") + page)
            elif mode == "html-stream":
                writer.write(head("200 OK", "Content-Type: text/html", "Transfer-Encoding: chunked")
                             + f"{len(SSE):x}\r\n".encode() + SSE + b"\r\n0\r\n\r\n")
            elif mode == "huge":
                writer.write(head("200 OK", "Content-Type: application/json", "Content-Length: 100000000"))
                while True:
                    writer.write(b" " * 65536)
                    await writer.drain()
            elif mode == "endless":  # no length: read until close, which never comes
                writer.write(head("200 OK", "Content-Type: application/json", "Connection: close"))
                while True:
                    writer.write(b" " * 65536)
                    await writer.drain()
            elif mode == "trickle":
                writer.write(head("200 OK", "Content-Type: application/json", "Content-Length: 1000000"))
                while True:
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            elif mode == "1xx":
                while True:
                    writer.write(head("102 Processing"))
                    await writer.drain()
            elif mode in ("many-1xx", "two-1xx"):  # informational heads, then a good answer
                for _ in range(10_000 if mode == "many-1xx" else 2):
                    writer.write(head("100 Continue"))
                writer.write(head("200 OK", "Content-Type: application/json", f"Content-Length: {len(ANSWER)}") + ANSWER)
            elif mode == "superscript-length":
                writer.write(head("200 OK", "Content-Type: application/json", "Content-Length: \u00b2".encode().decode("latin-1")))
            elif mode == "slow-stream":  # a stream that never ends by itself
                writer.write(head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"))
                while True:
                    writer.write(f"{len(SSE):x}\r\n".encode() + SSE + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def instances(*modes: str, **policy):
    """A proxy in front of one raw instance per mode, all ready."""
    servers = [await asyncio.start_server(lambda r, w, m=mode: answer(m, r, w), "127.0.0.1", 0) for mode in modes]
    registry = InstanceRegistry(CATALOGUE)
    for i, server in enumerate(servers):
        port = server.sockets[0].getsockname()[1]
        registry.add(Instance(f"{modes[i]}-{i}", MODEL, f"http://127.0.0.1:{port}", state=InstanceState.READY))
    monitor = HealthMonitor(registry, HealthPolicy())
    proxy = UpstreamProxy(registry, make_balancer("least-busy"), monitor, GatewayMetrics(registry),
                          AutoRouter(CATALOGUE.routing), ProxyPolicy(**{"attempts": 1, **policy}))
    await proxy.start()
    try:
        yield proxy, registry
    finally:
        await proxy.stop()
        for server in servers:
            server.close()


def request(stream: bool = False) -> Request:
    body = json.dumps({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).encode()
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays

    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                    "headers": [(b"content-type", b"application/json")]}, receive)


async def test_the_gateway_says_what_it_relays_not_the_instance():
    async with instances("html") as (proxy, _):
        response = await proxy.handle(request(), "/v1/chat/completions")
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
    async with instances("html-stream") as (proxy, _):
        response = await proxy.handle(request(stream=True), "/v1/chat/completions")
        assert response.headers["content-type"].startswith("text/event-stream")
        await response.body_iterator.aclose()


@pytest.mark.parametrize("mode", ["huge", "endless"])
async def test_a_non_streamed_answer_is_read_up_to_a_cap(mode):
    async with instances(mode, max_response_bytes=256 * 1024) as (proxy, registry):
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await proxy.handle(request(), "/v1/chat/completions")
        assert caught.value.status == 503 and "bytes" in caught.value.message
        assert time.monotonic() - started < 5
        assert registry.all()[0].outstanding == 0


@pytest.mark.parametrize("mode", ["trickle", "1xx"])
async def test_a_trickling_or_looping_instance_meets_the_total_deadline(mode):
    async with instances(mode, request_timeout=1.0) as (proxy, registry):
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await proxy.handle(request(), "/v1/chat/completions")
        assert caught.value.status == 503 and caught.value.code == "upstream_unavailable"
        assert time.monotonic() - started < 3
        assert registry.all()[0].outstanding == 0


async def test_informational_heads_are_bounded_by_count_not_only_by_the_deadline():
    # aiohttp alone would skip all 10,000 and relay the 200 behind them (the deadline is far away).
    async with instances("many-1xx", request_timeout=60.0) as (proxy, registry):
        with pytest.raises(ApiError) as caught:
            await proxy.handle(request(), "/v1/chat/completions")
        assert caught.value.status == 503 and "informational" in caught.value.message
        assert registry.all()[0].outstanding == 0 and registry.all()[0].state is InstanceState.UNHEALTHY
    async with instances("two-1xx") as (proxy, _):  # a few are normal HTTP and pass
        for _ in range(2):  # the connection's next answer is read as usual
            response = await proxy.handle(request(), "/v1/chat/completions")
            assert response.status_code == 200 and json.loads(response.body)["choices"][0]["message"]["content"] == "hi"


async def test_a_malformed_length_fails_over_to_another_instance():
    async with instances("superscript-length", "ok", attempts=2) as (proxy, registry):
        bad = registry.get("superscript-length-0")
        for _ in range(20):  # until the balancer has tried the bad one: every answer is the good one's
            response = await proxy.handle(request(), "/v1/chat/completions")
            assert response.status_code == 200 and response.headers["x-arena-instance"] == "ok-1"
            if bad.state is InstanceState.UNHEALTHY:
                break
        assert bad.state is InstanceState.UNHEALTHY and bad.errors_total == 1


async def test_a_client_gone_before_the_head_was_sent_frees_the_slot_and_connection():
    async with instances("slow-stream", max_connections=1, connect_timeout=0.5) as (proxy, registry):
        for _ in range(3):  # with one pooled connection, a leaked one would starve the next request
            response = await proxy.handle(request(stream=True), "/v1/chat/completions")
            assert isinstance(response, RelayResponse)

            async def send(message):
                raise OSError("client gone")

            await response({"type": "http"}, request().receive, send)
            assert registry.all()[0].outstanding == 0


async def test_waiting_for_a_pooled_connection_is_bounded():
    async with instances("slow-stream", max_connections=1, connect_timeout=0.5) as (proxy, registry):
        held = await proxy.handle(request(stream=True), "/v1/chat/completions")
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await proxy.handle(request(stream=True), "/v1/chat/completions")
        assert "connect" in caught.value.message.lower() or "connection" in caught.value.message.lower()
        assert time.monotonic() - started < 3
        await held.body_iterator.aclose()
        assert registry.all()[0].outstanding == 0
