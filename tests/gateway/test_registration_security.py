"""Registration trusts no one (issue #11 item 5): a registration is bound to its secret, URLs are
origins on allowed hosts, each model has a cap, probes never follow a redirect with the secret,
and a registration's life is measured on an injected clock."""

from __future__ import annotations

import httpx
import pytest

from gateway.instances import InstanceRegistry, InstanceState
from gateway.registration import RegistrationService, RegistrationStore, UrlPolicy
from gateway.store import Database
from scripts.gateway_client import GatewayRegistrationClient, RegistrationError
from shared.catalogue import load_catalogue
from shared.errors import ApiError
from tests.gateway.conftest import SMOL, assert_openai_error, chat_body, gateway_env, instance_state, wait_until
from tests.gateway.test_registration import AUTH, TOKEN, bound, register
from tests.loopback import LoopbackServer, QuietHandler


def test_a_registration_is_bound_to_the_secret_that_made_it(tmp_path, fake_upstreams, gateways):
    fake, other = fake_upstreams(), fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN))
    own = bound(register(gateway, "victim", fake.url))
    thief = {**AUTH, "X-Arena-Registration-Secret": "rs-guessed"}
    for headers in (AUTH, thief):  # the token alone is not enough, nor a wrong secret
        assert_openai_error(httpx.post(gateway.url + "/api/instances/victim/heartbeat", headers=headers, timeout=5),
                            403, "invalid_registration_secret")
        assert_openai_error(httpx.delete(gateway.url + "/api/instances/victim", headers=headers, timeout=5),
                            403, "invalid_registration_secret")
        assert_openai_error(register(gateway, "victim", other.url, headers=headers), 409, "instance_id_taken")
    wait_until(lambda: instance_state(gateway, "victim") == "ready")
    assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(), timeout=10).status_code == 200
    assert fake.stats()["requests"] == 1 and other.stats()["requests"] == 0  # still the victim's own URL
    assert httpx.post(gateway.url + "/api/instances/victim/heartbeat", headers=own, timeout=5).status_code == 200
    assert httpx.delete(gateway.url + "/api/instances/victim", headers=own, timeout=5).status_code == 200
    # Once it is gone, the id is free for anyone with the token (a new secret).
    assert bound(register(gateway, "victim", other.url))["X-Arena-Registration-Secret"] != own[
        "X-Arena-Registration-Secret"]


@pytest.mark.parametrize("url, status", [
    ("ftp://127.0.0.1:9", 400),
    ("http://user:pw@127.0.0.1:9", 400),
    ("http://127.0.0.1:9999/anything#", 400),
    ("http://127.0.0.1:9999/v1?x=1", 400),
    ("http://127.0.0.1:9999/prefix", 400),
    ("http://127.0.0.1:notaport", 400),
    ("http://10.1.2.3:8080", 403),
    ("https://evil.example.com", 403),
    ("https://example.org.evil.net", 403),
    ("https://runner.example.org.evil.net", 403),
])
def test_registered_urls_must_be_allowed_origins(url, status):
    policy = UrlPolicy(["loopback", "*.example.org"])
    with pytest.raises(ApiError) as refused:
        policy.check(url)
    assert refused.value.status == status and refused.value.param == "url"


def test_allowed_urls_are_normalised_to_their_origin():
    policy = UrlPolicy(["loopback", "*.example.org"])
    assert policy.check("http://127.0.0.1:8001/") == "http://127.0.0.1:8001"
    assert policy.check("https://Runner-1.Example.org") == "https://runner-1.example.org"
    assert policy.check("http://localhost:9") == "http://localhost:9"
    assert policy.check("http://[::1]:9") == "http://[::1]:9"


def test_the_gateway_refuses_a_url_off_its_allow_list(tmp_path, gateways):
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN, BASE_DOMAIN="fleet.example.org"))
    assert_openai_error(register(gateway, "x", "http://127.0.0.1:9999/anything#"), 400, param="url")
    assert_openai_error(register(gateway, "x", "https://attacker.example.com"), 403, "host_not_allowed")
    assert register(gateway, "x", "https://smollm2.fleet.example.org").status_code == 200


def test_registrations_per_model_are_capped(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN, max_registrations_per_model="2"))
    first = bound(register(gateway, "one", fake.url))
    bound(register(gateway, "two", fake.url))
    assert_openai_error(register(gateway, "three", fake.url), 409, "registration_limit_reached")
    assert register(gateway, "one", fake.url, headers=first).status_code == 200  # a renewal is no new one
    assert httpx.delete(gateway.url + "/api/instances/one", headers=first, timeout=5).status_code == 200
    assert register(gateway, "three", fake.url).status_code == 200


class _Recorder(QuietHandler):
    """Answers every request with `answer` (a redirect, or 200), recording the headers it saw."""

    answer: tuple[int, dict[str, str]] = (200, {})
    seen: list[dict[str, str]]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(dict(self.headers))
        self.reply(*self.answer)


def _serve(answer: tuple[int, dict[str, str]]) -> tuple[LoopbackServer, list]:
    seen: list = []
    return LoopbackServer(type("Handler", (_Recorder,), {"answer": answer, "seen": seen})), seen


def test_health_probes_never_follow_a_redirect_with_the_instance_secret(tmp_path, gateways):
    elsewhere, stolen = _serve((200, {}))
    redirector, probed = _serve((302, {"Location": f"{elsewhere.url}/health"}))
    with elsewhere, redirector:
        gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN, ARENA_INSTANCE_SECRET="s3cret"))
        assert register(gateway, "redirecting", redirector.url).status_code == 200
        wait_until(lambda: len(probed) >= 3, timeout=10, what="probes of the redirecting instance")
        assert stolen == []
        assert instance_state(gateway, "redirecting") != "ready"


def test_the_runner_client_sends_its_registration_secret(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, ARENA_REGISTRATION_TOKEN=TOKEN))
    runner, stranger = GatewayRegistrationClient(gateway.url, TOKEN), GatewayRegistrationClient(gateway.url, TOKEN)
    try:
        runner.register(model=SMOL, url=fake.url, instance_id="run-1", ttl_seconds=30)
        assert runner.heartbeat("run-1")
        with pytest.raises(RegistrationError):
            stranger.heartbeat("run-1")
        with pytest.raises(RegistrationError):
            stranger.deregister("run-1")
        runner.register(model=SMOL, url=fake.url, instance_id="run-1", ttl_seconds=30)  # renewal keeps it
        assert runner.heartbeat("run-1")
        assert runner.deregister("run-1")
    finally:
        runner.close()
        stranger.close()


async def test_registrations_live_their_ttl_on_an_injected_clock(tmp_path):
    now = [1_000.0]
    db = Database(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await db.upgrade()
    registry = InstanceRegistry(load_catalogue())
    service = RegistrationService(RegistrationStore(db), registry, default_ttl=10, max_ttl=100,
                                  url_policy=UrlPolicy(["loopback"]), clock=lambda: now[0])
    try:
        instance, secret = await service.register({"model": SMOL, "url": "http://127.0.0.1:9", "instance_id": "r",
                                                   "ttl_seconds": 10})
        assert instance.expires_at == 1_010.0
        now[0] = 1_009.0
        assert (await service.heartbeat("r", {}, secret)).expires_at == 1_019.0
        now[0] = 1_018.9
        assert service.expire() == [] and await service.sync() == 1
        now[0] = 1_019.0
        assert service.expire() == [instance] and instance.state is InstanceState.GONE
        with pytest.raises(ApiError) as missing:
            await service.heartbeat("r", {}, secret)
        assert missing.value.status == 404
        # Another gateway's view: the store alone says it is expired.
        other = InstanceRegistry(load_catalogue())
        peer = RegistrationService(RegistrationStore(db), other, default_ttl=10, max_ttl=100,
                                   url_policy=UrlPolicy(["loopback"]), clock=lambda: now[0])
        assert await peer.sync() == 0 and other.get("r") is None
    finally:
        await db.dispose()
