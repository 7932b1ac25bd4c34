"""The overload buffer: while every instance of a model is full, requests wait at the gateway
for a free slot instead of meeting a full instance queue (real gateway, fake instance with
enforced slots and no queue)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from shared.catalogue import env_key
from tests.gateway.conftest import SMOL, assert_openai_error, chat_body, gateway_env, wait_ready, wait_until


def burst(url: str, n: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: httpx.post(url + "/v1/chat/completions", json=chat_body(), timeout=30),
                             range(n)))


def start(tmp_path, fake_upstreams, gateways, *, buffer: int, wait: float = 30.0):
    upstream = fake_upstreams("--slots", "2")
    upstream.control(max_queue=0, delay=0.4)  # two at a time, nothing queued: a third is a 503
    gateway = gateways(gateway_env(tmp_path, {SMOL: [upstream.url]}, **{
        f"ARENA_MODEL_{env_key(SMOL)}__OVERLOAD_BUFFER": str(buffer),
        f"ARENA_MODEL_{env_key(SMOL)}__OVERLOAD_WAIT": str(wait)}))
    wait_ready(gateway, f"{SMOL}-0")
    wait_until(lambda: httpx.get(f"{gateway.url}/api/instances/{SMOL}-0").json()["slots_total"] == 2,
               what="the instance's slots reported")
    return gateway, upstream


def test_requests_over_the_slots_wait_for_a_free_one(tmp_path, fake_upstreams, gateways):
    gateway, upstream = start(tmp_path, fake_upstreams, gateways, buffer=8)
    responses = burst(gateway.url, 6)
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses if r.status_code != 200]
    assert upstream.stats()["rejected"] == 0


def test_a_full_buffer_or_a_wait_run_out_is_a_503_with_retry_after(tmp_path, fake_upstreams, gateways):
    gateway, upstream = start(tmp_path, fake_upstreams, gateways, buffer=1, wait=0.1)
    responses = burst(gateway.url, 6)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert_openai_error(response, 503, "overloaded")
            assert int(response.headers["retry-after"]) >= 1
    assert upstream.stats()["rejected"] == 0  # nothing was sent to a full instance
