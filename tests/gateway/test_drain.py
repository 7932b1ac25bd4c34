"""The gateway's drain on SIGTERM: in-flight streams finish, new requests get a retryable 503,
then the process exits by itself."""

from __future__ import annotations

import signal
import threading

import httpx

from tests.gateway.conftest import SMOL, assert_openai_error, chat_body, gateway_env, wait_ready


def test_sigterm_finishes_streams_refuses_new_requests_and_exits(tmp_path, fake_upstreams, gateways):
    slow = fake_upstreams("--chunks", "20", "--chunk-delay", "0.1")
    gateway = gateways(gateway_env(tmp_path, {SMOL: [slow.url]}, drain_linger="0.5"))
    wait_ready(gateway, f"{SMOL}-0")
    started, body = threading.Event(), bytearray()

    def stream() -> None:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True),
                          timeout=30) as response:
            for chunk in response.iter_bytes():
                body.extend(chunk)
                started.set()

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert started.wait(10)
    gateway.process.send_signal(signal.SIGTERM)
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=5)
    assert_openai_error(refused, 503, "gateway_draining")
    assert refused.headers["retry-after"] == "1"
    assert gateway.process.poll() is None  # still serving the stream
    streaming.join(30)
    assert bytes(body).rstrip().endswith(b"data: [DONE]") and body.count(b"chat.completion.chunk") >= 20
    assert gateway.wait_exit(timeout=20) == 0
