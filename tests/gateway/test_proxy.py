"""The request path through the gateway, in front of fake upstream processes: the gateway built
in-process where a test checks its logic, a real gateway process where the transport or the
process's own output is what is tested."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.gateway.conftest import (GEMMA, SMOL, assert_openai_error, chat_body, gateway_env, instance_state,
                                    wait_ready, wait_until)


def sse_events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture
def one_model(tmp_path, fake_upstreams, gateways):
    upstream = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, {SMOL: [upstream.url]}))
    wait_ready(gateway, f"{SMOL}-0")
    return gateway, upstream


@pytest.fixture
def one_model_app(fake_upstreams, gateway_apps):
    upstream = fake_upstreams()
    gateway = gateway_apps({SMOL: [upstream.url]})
    wait_ready(gateway, f"{SMOL}-0")
    return gateway, upstream


def test_non_streamed_and_streamed_completions_pass_through(one_model):
    gateway, upstream = one_model
    response = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert response.status_code == 200
    assert response.headers["x-arena-instance"] == f"{SMOL}-0"
    assert response.json()["choices"][0]["message"]["content"].startswith("w0 w1")

    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert len(events) == 17 and events[-1] == "[DONE]"
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "w1 "

    completion = httpx.post(gateway.url + "/v1/completions", json={"model": SMOL, "prompt": "Hi"}, timeout=10)
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    assert upstream.stats()["requests"] == 3


def test_stream_is_relayed_chunk_by_chunk(one_model):
    gateway, upstream = one_model
    upstream.control(chunk_delay=0.15, chunks=8)
    arrivals = []
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 9
    # Buffered, everything would arrive at once after ~1.05 s; relayed, the first comes long before the last.
    assert arrivals[0] < 0.6 and arrivals[-1] - arrivals[0] > 0.8, arrivals


def test_models_lists_only_models_with_a_ready_instance(one_model_app):
    gateway, _ = one_model_app
    models = gateway.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [SMOL]
    assert gateway.get(f"/v1/models/{SMOL}").json()["id"] == SMOL
    assert_openai_error(gateway.get(f"/v1/models/{GEMMA}"), 404, "model_not_found")


def test_bad_requests_get_openai_shaped_errors(one_model_app):
    gateway, _ = one_model_app
    url = "/v1/chat/completions"
    assert_openai_error(gateway.post(url, json=chat_body("no-such-model")), 404, "model_not_found")
    error = assert_openai_error(gateway.post(url, json=chat_body(GEMMA)), 503, "no_ready_instance")
    assert error["type"] == "service_unavailable"
    json_type = {"content-type": "application/json"}
    assert_openai_error(gateway.post(url, content=b"{not json", headers=json_type), 400, "invalid_json")
    assert_openai_error(gateway.post(url, content=json.dumps(chat_body()), headers={"content-type": "text/plain"}),
                        415, "unsupported_media_type")
    assert_openai_error(gateway.post(url, data={"model": SMOL}), 415, "unsupported_media_type")
    assert_openai_error(gateway.post(url, json=[1, 2]), 400, "invalid_json")
    assert_openai_error(gateway.post(url, json={"messages": []}), 400, "invalid_value")
    assert_openai_error(gateway.post(url, json={"model": 7}), 400, "invalid_value")
    assert_openai_error(gateway.get(url), 405)
    assert_openai_error(gateway.post(url, content=b"x" * (5 * 1024 * 1024), headers=json_type), 413)
    assert_openai_error(gateway.get("/v1/nothing-here"), 404)
    assert_openai_error(gateway.post("/api/instances", json={}), 503, "registration_disabled")


def test_upstream_errors_pass_through_in_openai_shape(fake_upstreams, gateway_apps):
    # A foreign server that wants its own model name, but is registered under ours: the gateway
    # learns the name from /v1/models and rewrites it; without that the fake answers 404.
    upstream = fake_upstreams("--no-details", "--served-name", "SmolLM2-135M-Instruct-Q4")
    gateway = gateway_apps({SMOL: [upstream.url]})
    wait_ready(gateway, f"{SMOL}-0")
    info = gateway.get(f"/api/instances/{SMOL}-0").json()
    assert info["probe_mode"] == "health" and info["slots_total"] is None
    response = gateway.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200, response.text
    assert upstream.stats()["last_body"]["model"] == "SmolLM2-135M-Instruct-Q4"


def test_auto_picks_a_ready_model_by_the_catalogue_rules(fake_upstreams, gateway_apps):
    smol, gemma = fake_upstreams(), fake_upstreams(model=GEMMA)
    gateway = gateway_apps({SMOL: [smol.url], GEMMA: [gemma.url]})
    wait_ready(gateway, f"{SMOL}-0", f"{GEMMA}-0")
    url = "/v1/chat/completions"
    facts = gateway.post(url, json=chat_body("auto", text="What is the capital of France?"))
    assert facts.status_code == 200 and facts.headers["x-arena-model"] == GEMMA
    assert gemma.stats()["last_body"]["model"] == GEMMA
    chat = gateway.post(url, json=chat_body("auto", stream=True, text="Tell me a joke"))
    assert chat.status_code == 200 and chat.headers["x-arena-model"] == SMOL
    # With its rule's model down, "auto" falls back to a ready one.
    gemma.stop()
    wait_until(lambda: instance_state(gateway, f"{GEMMA}-0") == "unhealthy", what="gemma unhealthy")
    again = gateway.post(url, json=chat_body("auto", text="What is the capital of Spain?"))
    assert again.headers["x-arena-model"] == SMOL


def test_instance_secret_is_sent_only_by_the_gateway(fake_upstreams, gateway_apps):
    upstream = fake_upstreams("--secret", "s3cret")
    gateway = gateway_apps({SMOL: [upstream.url]}, instance_secret="s3cret")
    wait_ready(gateway, f"{SMOL}-0")
    assert httpx.post(upstream.url + "/v1/chat/completions", json=chat_body(), timeout=5).status_code == 401
    assert gateway.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_openai_sdk_against_the_gateway(one_model):
    gateway, _ = one_model
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [SMOL]
    reply = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    assert reply.choices[0].message.content.startswith("w0")
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True)]
    assert "".join(pieces).startswith("w1 w2")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.code == "model_not_found"


def test_one_request_log_line_per_answer(one_model):
    gateway, _ = one_model

    def access_lines() -> list[dict]:
        return [json.loads(line) for line in gateway.log_path.read_text(errors="replace").splitlines()
                if '"gateway.access"' in line]

    before = len(access_lines())
    url = gateway.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat_body(), timeout=10).status_code == 200
    with httpx.stream("POST", url, json=chat_body(stream=True), timeout=10) as r:
        assert r.status_code == 200 and r.read().endswith(b"data: [DONE]\n\n")
    wait_until(lambda: len(access_lines()) >= before + 2, timeout=5, what="two request log lines")
    plain, streamed = access_lines()[before:]
    for line, stream in ((plain, False), (streamed, True)):
        assert line["status"] == 200 and line["stream"] is stream and line["instance"] == f"{SMOL}-0"
        assert line["attempts"] == 1 and line["error"] is None and line["ms"] > 0
    assert plain["completion_tokens"] == 16 and plain["ttft_ms"] is None
    assert streamed["completion_tokens"] == 14 and 0 < streamed["ttft_ms"] <= streamed["ms"]
