"""The agent's registration client against a respx fake of the gateway's registration API."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from scripts.gateway_client import GatewayRegistrationClient, GatewayUnavailable, RegistrationError

GW = "http://gateway.test"


def client() -> GatewayRegistrationClient:
    return GatewayRegistrationClient(GW + "/", "reg-token-123456", backoff=0)


@respx.mock
def test_register_heartbeat_lookup_deregister_one_id():
    reg = respx.post(f"{GW}/api/instances").mock(return_value=httpx.Response(
        200, json={"instance_id": "m.1.ab", "model": "m", "expires_at": "2026-11-22T03:00:00Z"}))
    beat = respx.post(f"{GW}/api/instances/m.1.ab/heartbeat").mock(side_effect=[
        httpx.Response(200, json={}), httpx.Response(404, json={"detail": "unknown"})])
    respx.get(f"{GW}/api/instances/m.1.cd").mock(return_value=httpx.Response(
        200, json={"instance_id": "m.1.cd", "model": "m", "url": "https://x", "state": "ready"}))
    delete = respx.delete(f"{GW}/api/instances/m.1.ab").mock(return_value=httpx.Response(200, json={}))
    c = client()
    answer = c.register(model="m", url="https://x", instance_id="m.1.ab", ttl_seconds=30)
    assert answer["expires_at"]
    assert json.loads(reg.calls.last.request.content) == {
        "model": "m", "url": "https://x", "instance_id": "m.1.ab", "ttl_seconds": 30}
    assert reg.calls.last.request.headers["authorization"] == "Bearer reg-token-123456"
    assert c.heartbeat("m.1.ab") is True
    assert c.heartbeat("m.1.ab") is False       # forgotten: the caller registers again
    assert beat.call_count == 2
    assert c.is_ready("m.1.cd") is True
    assert c.deregister("m.1.ab") is True
    assert delete.call_count == 1
    assert all(call.request.url.path != "/api/instances/m.1.cd" or call.request.method == "GET"
               for call in respx.calls)


@respx.mock
def test_bad_token_and_unknown_model_are_clear():
    respx.post(f"{GW}/api/instances").mock(side_effect=[
        httpx.Response(401, json={"detail": "bad token"}), httpx.Response(404, json={"detail": "no model"})])
    c = client()
    with pytest.raises(RegistrationError, match="ARENA_REGISTRATION_TOKEN"):
        c.register(model="m", url="u", instance_id="i", ttl_seconds=30)
    with pytest.raises(RegistrationError, match="does not know the model"):
        c.register(model="m", url="u", instance_id="i", ttl_seconds=30)


@respx.mock
def test_gateway_down_is_retried_then_reported():
    route = respx.post(f"{GW}/api/instances/i/heartbeat").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GatewayUnavailable):
        client().heartbeat("i")
    assert route.call_count == 3


@respx.mock
def test_not_ready_while_unknown_or_unhealthy():
    respx.get(f"{GW}/api/instances/i").mock(side_effect=[
        httpx.Response(404, json={}), httpx.Response(200, json={"state": "unhealthy"})])
    c = client()
    assert c.is_ready("i") is False
    assert c.is_ready("i") is False


def test_missing_configuration_is_named():
    with pytest.raises(RegistrationError, match="ARENA_GATEWAY_URL"):
        GatewayRegistrationClient("", "t")
    with pytest.raises(RegistrationError, match="ARENA_REGISTRATION_TOKEN"):
        GatewayRegistrationClient(GW, "")
