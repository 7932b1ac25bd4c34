"""Instances that register themselves with a real gateway: token, heartbeats, expiry, handoff,
and registrations that survive a gateway restart."""

from __future__ import annotations

import time

import httpx

from tests.gateway.conftest import SMOL, assert_openai_error, chat_body, gateway_env, instance_state, wait_until

TOKEN = "reg-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def register(gateway, instance_id: str, url: str, ttl: int = 30, model: str = SMOL, headers=AUTH) -> httpx.Response:
    return httpx.post(gateway.url + "/api/instances", headers=headers, timeout=5,
                      json={"model": model, "url": url, "instance_id": instance_id, "ttl_seconds": ttl})


def bound(response: httpx.Response) -> dict[str, str]:
    """Headers for later calls about a registration: the token and the secret registering returned."""
    assert response.status_code == 200, response.text
    return {**AUTH, "X-Arena-Registration-Secret": response.json()["registration_secret"]}


def test_register_heartbeat_expire(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN))
    assert_openai_error(register(gateway, "r1", fake.url, headers={}), 401)
    assert_openai_error(register(gateway, "r1", fake.url, headers={"Authorization": "Bearer nope"}), 401)
    assert_openai_error(register(gateway, "r1", fake.url, model="nope"), 404, "model_not_found")
    assert_openai_error(register(gateway, "r1", "ftp://x"), 400)
    assert_openai_error(register(gateway, "r1", fake.url, ttl=0), 400)

    created = register(gateway, "r1", fake.url, ttl=2)
    own = bound(created)
    body = created.json()
    assert body["instance_id"] == "r1" and body["model"] == SMOL and body["expires_at"] > time.time()
    wait_until(lambda: instance_state(gateway, "r1") == "ready", what="registered instance ready")
    assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10).headers[
        "x-arena-instance"] == "r1"

    for _ in range(4):  # heartbeats keep it past its 2 s TTL
        time.sleep(0.8)
        beat = httpx.post(gateway.url + "/api/instances/r1/heartbeat", headers=own, timeout=5)
        assert beat.status_code == 200
    assert instance_state(gateway, "r1") == "ready"
    assert httpx.post(gateway.url + "/api/instances/r1/heartbeat", headers=own, json={"ttl_seconds": 1},
                      timeout=5).status_code == 200
    wait_until(lambda: instance_state(gateway, "r1") == "gone", timeout=5, what="expiry")
    assert_openai_error(httpx.post(gateway.url + "/api/instances/r1/heartbeat", headers=own, timeout=5),
                        404, "instance_not_found")
    assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=5), 503)


def test_handoff_removes_only_the_callers_own_instance(tmp_path, fake_upstreams, gateways):
    old, new = fake_upstreams(), fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN))
    first = bound(register(gateway, "runner-1", old.url))
    # The successor may come up behind the very same public URL (same tunnel hostname).
    second = bound(register(gateway, "runner-2", old.url))
    moved = register(gateway, "runner-2", new.url, headers=second)  # re-registration moves it
    assert moved.status_code == 200 and "registration_secret" not in moved.json()  # it keeps its secret
    wait_until(lambda: instance_state(gateway, "runner-2") == "ready", what="successor ready")
    removed = httpx.delete(gateway.url + "/api/instances/runner-1", headers=first, timeout=5)
    assert removed.status_code == 200 and removed.json()["state"] == "gone"
    assert instance_state(gateway, "runner-2") == "ready"
    assert_openai_error(httpx.delete(gateway.url + "/api/instances/runner-1", headers=first, timeout=5), 404)
    assert_openai_error(httpx.delete(gateway.url + "/api/instances/runner-2", timeout=5), 401)
    for _ in range(3):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10)
        assert response.headers["x-arena-instance"] == "runner-2"
    assert new.stats()["requests"] == 3


def test_registrations_survive_a_gateway_restart(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    env = gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN)
    first = gateways(env)
    assert register(first, "persistent", fake.url, ttl=120).status_code == 200
    assert register(first, "short-lived", fake.url, ttl=1).status_code == 200
    port = first.port
    first.stop()
    time.sleep(1.2)
    second = gateways(env, port=port)
    wait_until(lambda: instance_state(second, "persistent") == "ready", what="restored registration ready")
    assert instance_state(second, "short-lived") is None  # expired while the gateway was down
    assert httpx.post(second.url + "/v1/chat/completions", json=chat_body(), timeout=10).status_code == 200
