"""The gateway's cache of deterministic answers: keys, bounds and age on plain objects; hits
answered without an instance, as JSON or SSE, through a real gateway in front of a fake one."""

from __future__ import annotations

import json

import httpx

from gateway.response_cache import ResponseCache
from tests.gateway.conftest import SMOL, gateway_env, wait_ready


def _body(**extra) -> dict:
    return {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, **extra}


def test_only_deterministic_requests_have_a_key_and_it_covers_every_parameter():
    cache = ResponseCache(8, 60)
    key = cache.key_for("/v1/chat/completions", SMOL, _body(), {})
    assert key is not None
    assert cache.key_for("/v1/chat/completions", SMOL, _body(stream=True, stream_options={"include_usage": True}),
                         {}) == key  # framing only
    for changed in (_body(max_tokens=5), _body(top_k=3), _body(stop=["x"]), _body(frobnicate=1),
                    {**_body(), "messages": [{"role": "user", "content": "Hello"}]}):
        assert cache.key_for("/v1/chat/completions", SMOL, changed, {}) not in (None, key)
    assert cache.key_for("/v1/completions", SMOL, _body(), {}) != key
    assert cache.key_for("/v1/chat/completions", SMOL, {**_body(), "temperature": 0.7}, {}) is None
    assert cache.key_for("/v1/chat/completions", SMOL, {**_body(), "temperature": 0.7, "seed": 3}, {}) is not None
    assert cache.key_for("/v1/chat/completions", SMOL, _body(n=2), {}) is None
    assert cache.key_for("/v1/chat/completions", SMOL, _body(), {"cache-control": "no-store"}) is None
    assert ResponseCache(0, 60).key_for("/v1/chat/completions", SMOL, _body(), {}) is None


def test_whether_a_key_is_wanted_is_known_before_it_is_made():
    # The gateway hops to a worker thread to make a large body's key only when it wants one.
    cache = ResponseCache(8, 60)
    assert cache.wants(_body(), {})
    assert not cache.wants({**_body(), "temperature": 0.7}, {})
    assert not cache.wants(_body(), {"cache-control": "no-store"})
    assert not ResponseCache(0, 60).wants(_body(), {})


def test_entries_are_bounded_and_expire():
    now = [0.0]
    cache = ResponseCache(2, ttl=10, clock=lambda: now[0])
    answer = b'{"model": "m", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}'
    for key in ("a", "b", "c"):
        cache.remember_whole(key, 200, answer)
    assert len(cache) == 2 and cache.get("a") is None and cache.get("b").content == "x"
    cache.remember_whole("d", 500, answer)
    cache.remember_whole("e", 200, answer.replace(b'"stop"', b'null'))  # unfinished: not kept
    assert cache.get("d") is None and cache.get("e") is None
    now[0] = 11
    assert cache.get("b") is None and len(cache) == 1


def _sse_content(text: str) -> tuple[str, list[dict]]:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return content, chunks


def test_a_repeated_deterministic_request_is_answered_without_an_instance(tmp_path, fake_upstreams, gateways):
    upstream = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, {SMOL: [upstream.url]}))
    wait_ready(gateway, f"{SMOL}-0")
    url = gateway.url + "/v1/chat/completions"
    with httpx.Client(timeout=10) as client:
        first = client.post(url, json=_body())
        second = client.post(url, json=_body())
        assert "x-arena-cache" not in first.headers and second.headers["x-arena-cache"] == "hit"
        assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
        assert second.json()["usage"] == first.json()["usage"]
        assert upstream.stats()["requests"] == 1

        hit = client.post(url, json=_body(stream=True, stream_options={"include_usage": True}))
        assert hit.headers["x-arena-cache"] == "hit" and hit.headers["content-type"].startswith("text/event-stream")
        content, chunks = _sse_content(hit.text)
        assert content == first.json()["choices"][0]["message"]["content"]
        assert chunks[-1]["usage"] == first.json()["usage"] and upstream.stats()["requests"] == 1

        # A stream that passed through is recorded too, and the opt-out is honoured.
        streamed = client.post(url, json=_body(stream=True, max_tokens=7))
        again = client.post(url, json=_body(max_tokens=7))
        assert "x-arena-cache" not in streamed.headers and again.headers["x-arena-cache"] == "hit"
        assert again.json()["choices"][0]["message"]["content"] == _sse_content(streamed.text)[0]
        opted_out = client.post(url, json=_body(), headers={"Cache-Control": "no-store"})
        sampled = client.post(url, json={**_body(), "temperature": 0.9})
        assert "x-arena-cache" not in opted_out.headers and "x-arena-cache" not in sampled.headers
        assert upstream.stats()["requests"] == 4
