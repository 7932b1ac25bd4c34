"""Instances failing under a real gateway: retries before the first byte, clean stream errors
after it, disconnects that free the instance, draining, recovery and cool-down."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from tests.gateway.conftest import SMOL, chat_body, gateway_env, instance_state, wait_ready, wait_until


async def _stream(client: httpx.AsyncClient, url: str, flowing: list | None = None) -> list[str]:
    events = []
    async with client.stream("POST", url, json=chat_body(stream=True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 2 and flowing is not None:
                    flowing.append(True)
    return events


@pytest.fixture
def two_instances(tmp_path, fake_upstreams, gateways):
    a, b = fake_upstreams(), fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, {SMOL: [a.url, b.url]}))
    wait_ready(gateway, f"{SMOL}-0", f"{SMOL}-1")
    return gateway, a, b


async def test_kill_an_instance_under_load(two_instances):
    gateway, a, b = two_instances
    for fake in (a, b):  # room for every request at once: none waits in the gateway's buffer
        fake.control(delay=0.4, chunk_delay=0.1, slots=32)
    await asyncio.to_thread(wait_until, lambda: all(
        httpx.get(f"{gateway.url}/api/instances/{SMOL}-{i}").json()["slots_total"] == 32 for i in (0, 1)),
        what="the slots reported")
    url = gateway.url + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as client:
        plain = [asyncio.create_task(client.post(url, json=chat_body())) for _ in range(16)]
        flowing: list = []
        streams = [asyncio.create_task(_stream(client, url, flowing)) for _ in range(6)]
        # Kill once every stream is flowing (non-streamed requests are in flight too).
        await asyncio.to_thread(wait_until, lambda: len(flowing) == 6, what="the streams flowing")
        a.process.send_signal(signal.SIGKILL)
        late = [asyncio.create_task(client.post(url, json=chat_body())) for _ in range(8)]
        results = await asyncio.gather(*plain, *late)
        stream_results = await asyncio.gather(*streams)
    assert [r.status_code for r in results] == [200] * 24, [r.text for r in results if r.status_code != 200]
    broken = 0
    for events in stream_results:
        assert events[-1] == "[DONE]"
        errors = [json.loads(e) for e in events[:-1] if e.startswith('{"error"')]
        if errors:
            broken += 1
            assert errors[0]["error"]["code"] == "upstream_stream_broken" and events[-2].startswith('{"error"')
        else:
            assert len(events) == 17
    assert broken >= 1  # the streams on the killed instance ended with a clear error
    assert instance_state(gateway, f"{SMOL}-0") == "unhealthy"


def test_503_and_connection_errors_retry_on_another_instance(two_instances):
    gateway, a, b = two_instances
    a.control(reject_503=True)
    for _ in range(6):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10)
        assert response.status_code == 200 and response.headers["x-arena-instance"] == f"{SMOL}-1"
    b.control(reject_503=True)
    response = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "instances_busy"


def test_a_stream_broken_after_bytes_ends_with_an_error_event_then_done(two_instances):
    gateway, a, b = two_instances
    for fake in (a, b):
        fake.control(break_after=3)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=10) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert len(events) == 5 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "upstream_error"


def test_client_disconnect_closes_the_upstream_request(two_instances):
    gateway, a, b = two_instances
    for fake in (a, b):
        fake.control(chunk_delay=0.5, chunks=16)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=10) as r:
        next(r.iter_lines())
    wait_until(lambda: a.stats()["disconnected"] + b.stats()["disconnected"] == 1, timeout=3,
               what="the instance to see the disconnect")
    assert a.stats()["active"] + b.stats()["active"] == 0

    # Before the first byte too: a non-streamed request the client gives up on is cancelled upstream.
    for fake in (a, b):
        fake.control(delay=0.0, chunk_delay=0.0)
        fake.control(delay=3.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=0.5)
    wait_until(lambda: a.stats()["active"] + b.stats()["active"] == 0, timeout=2, what="upstream cancelled")


def test_draining_instance_gets_no_new_requests(two_instances):
    gateway, a, b = two_instances
    a.control(status="draining")
    wait_until(lambda: instance_state(gateway, f"{SMOL}-0") == "draining", what="draining")
    for _ in range(4):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10).headers[
            "x-arena-instance"] == f"{SMOL}-1"
    a.control(status="ok")
    wait_until(lambda: instance_state(gateway, f"{SMOL}-0") == "ready", what="ready again")


def test_recovery_needs_good_probes_and_a_flapping_instance_cools_down(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    env = gateway_env(tmp_path, {SMOL: [fake.url]}, health_interval="0.2", recovery_probes="3",
                      flap_threshold="2", flap_cooldown="8")
    gateway = gateways(env)
    wait_ready(gateway, f"{SMOL}-0")

    def info() -> dict:
        return httpx.get(f"{gateway.url}/api/instances/{SMOL}-0", timeout=5).json()

    def fail_and_restart() -> None:
        fake.stop(timeout=5)
        wait_until(lambda: instance_state(gateway, f"{SMOL}-0") == "unhealthy", what="unhealthy")
        fake.process = None
        fake.start().wait_ready("/health", timeout=30)

    fail_and_restart()
    wait_until(lambda: info()["state"] == "ready", what="recovered")
    fail_and_restart()  # the second failure within the window starts a cool-down
    seen: list[dict] = []

    def cooled_down() -> bool:
        seen.append(info())
        return not seen[-1]["cooling_down"]

    wait_until(cooled_down, timeout=20, interval=0.2, what="the end of the cool-down")
    cooling = [current for current in seen if current["cooling_down"]]
    assert cooling and all(current["state"] == "unhealthy" for current in cooling)  # good probes don't count
    wait_until(lambda: info()["state"] == "ready", what="ready after the cool-down")
