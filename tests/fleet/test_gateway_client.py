"""The agent's registration client against the real gateway (its real answers: epoch
`expires_at`, OpenAI-shaped `error` objects), and against a dead or failing one."""

from __future__ import annotations

import httpx
import pytest
import respx

from scripts.gateway_client import GatewayRegistrationClient, GatewayUnavailable, RegistrationError
from tests.harness import start_gateway

TOKEN = "reg-token-123456"
ADMIN = "admin-key-123456"
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    proc = start_gateway(env={"ARENA_REGISTRATION_TOKEN": TOKEN, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                              "ARENA_GATEWAY_ADMIN_KEY": ADMIN,
                              "ARENA_FLEET__DATA_DIR": str(tmp_path_factory.mktemp("gw-data"))})
    yield proc
    proc.stop()


def client(url: str, token: str = TOKEN) -> GatewayRegistrationClient:
    return GatewayRegistrationClient(url + "/", token, backoff=0)


def test_register_heartbeat_lookup_deregister_one_id(gateway):
    c = client(gateway.url)
    answer = c.register(model=MODEL, url="http://127.0.0.1:9/", instance_id="m.1.ab", ttl_seconds=30)
    assert answer["instance_id"] == "m.1.ab" and isinstance(answer["expires_at"], (int, float))
    c.register(model=MODEL, url="http://127.0.0.1:9/", instance_id="m.1.cd", ttl_seconds=30)
    assert c.heartbeat("m.1.ab") is True
    assert c.is_ready("m.1.ab") is False            # nothing answers at that URL
    assert c.deregister("m.1.ab") is True
    assert c.deregister("m.1.ab") is False          # already gone
    assert c.heartbeat("m.1.ab") is False           # forgotten: the caller registers again
    assert c.instance("m.1.cd")["state"] != "gone"  # only its own id was removed
    assert c.instance("never-registered") is None
    c.deregister("m.1.cd")


def test_bad_token_unknown_model_and_bad_values_say_what_is_wrong(gateway):
    with pytest.raises(RegistrationError, match="rejected ARENA_REGISTRATION_TOKEN"):
        client(gateway.url, "wrong-token-000").register(model=MODEL, url="http://127.0.0.1:9/", instance_id="i",
                                                        ttl_seconds=30)
    with pytest.raises(RegistrationError, match="does not know the model"):
        client(gateway.url).register(model="no-such-model", url="http://127.0.0.1:9/", instance_id="i",
                                     ttl_seconds=30)
    with pytest.raises(RegistrationError, match="ttl_seconds"):
        client(gateway.url).register(model=MODEL, url="http://127.0.0.1:9/", instance_id="i", ttl_seconds=0)


def test_instance_urls_are_shown_to_the_admin_only(gateway):
    """A tunnel URL is where anyone could reach an instance directly: anonymous status views
    leave it out (the registration client and the admin key still see it)."""
    url = "https://secret-words-here.trycloudflare.com"
    registrar = client(gateway.url)  # it keeps the registration's secret, which deregistering needs
    answer = registrar.register(model=MODEL, url=url, instance_id="m.1.url", ttl_seconds=30)
    assert answer["url"] == url
    with httpx.Client(base_url=gateway.url) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for path in ("/api/instances", "/api/instances/m.1.url", "/api/status", "/status"):
            assert "secret-words-here" not in http.get(path).text, path
        assert "secret-words-here" not in http.get("/api/instances", headers={"Authorization": "Bearer nope"}).text
        assert url in http.get("/api/instances", headers=admin).text
        assert url in http.get("/api/instances/m.1.url", headers=admin).text
        assert url in http.get("/api/status", headers=admin).text
    assert registrar.deregister("m.1.url")


@respx.mock
def test_gateway_down_or_failing_is_retried_then_reported():
    route = respx.post("http://gateway.test/api/instances/i/heartbeat").mock(
        side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GatewayUnavailable):
        client("http://gateway.test").heartbeat("i")
    assert route.call_count == 3
    failing = respx.get("http://gateway.test/api/instances/i").mock(side_effect=[
        httpx.Response(502, text="bad gateway"), httpx.Response(503, text="unavailable"),
        httpx.Response(404, json={"error": {"message": "No instance 'i'.", "type": "invalid_request_error",
                                            "param": None, "code": "instance_not_found"}})])
    assert client("http://gateway.test").is_ready("i") is False
    assert failing.call_count == 3


def test_missing_configuration_is_named():
    with pytest.raises(RegistrationError, match="ARENA_GATEWAY_URL"):
        GatewayRegistrationClient("", "t")
    with pytest.raises(RegistrationError, match="ARENA_REGISTRATION_TOKEN"):
        GatewayRegistrationClient("http://gateway.test", "")


def test_a_runner_polling_its_successor_is_never_counted_as_guessing_the_admin_key(gateway):
    """During a handoff the runner asks for its successor's state every second, with its
    registration token in hand: that token is no wrong admin key, so neither the runner nor
    the admin behind the same address is ever refused for it."""
    runner = client(gateway.url)
    runner.register(model=MODEL, url="http://127.0.0.1:9/", instance_id="m.1.poll", ttl_seconds=30)
    with httpx.Client(base_url=gateway.url, timeout=5) as http:
        with_token = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(25):  # past the gateway's default 20 wrong keys a minute
            assert runner.instance("m.1.poll")["state"] != "gone"
            assert http.get("/api/instances/m.1.poll", headers=with_token).status_code == 200
        admin = http.get("/api/instances/m.1.poll", headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200 and admin.json()["url"] == "http://127.0.0.1:9"
    assert runner.deregister("m.1.poll")


@respx.mock
def test_the_instance_lookup_does_not_send_the_registration_token():
    looked = respx.get("http://gateway.test/api/instances/i").mock(return_value=httpx.Response(
        200, json={"instance_id": "i", "state": "ready"}))
    registered = respx.post("http://gateway.test/api/instances/i/heartbeat").mock(return_value=httpx.Response(200))
    c = client("http://gateway.test")
    assert c.is_ready("i") and c.heartbeat("i")
    assert "authorization" not in looked.calls.last.request.headers
    assert registered.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"
