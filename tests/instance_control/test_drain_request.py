"""Asking one registered instance to drain, on a real store (SQLite, then PostgreSQL) shared by two
gateways: the request is kept in the store, so whichever gateway the runner's heartbeat reaches
tells it, and every gateway takes the instance out of routing at its next sync."""

from __future__ import annotations

from gateway.instances import InstanceRegistry, InstanceState
from gateway.registration import RegistrationService, RegistrationStore, UrlPolicy
from shared.catalogue import load_catalogue

SMOL = "smollm2-135m"


def gateway(db) -> RegistrationService:
    return RegistrationService(RegistrationStore(db), InstanceRegistry(load_catalogue()), default_ttl=30, max_ttl=100,
                               url_policy=UrlPolicy(["loopback"]))


async def test_a_drain_request_reaches_the_runner_through_any_gateway_sharing_the_store(database):
    first, second = gateway(database), gateway(database)
    instance, secret = await first.register({"model": SMOL, "url": "http://127.0.0.1:9", "instance_id": "m.1.a"})
    sibling, _ = await first.register({"model": SMOL, "url": "http://127.0.0.1:10", "instance_id": "m.2.b"})
    await second.sync()
    assert not (await second.heartbeat("m.1.a", {}, secret)).retiring

    assert await first.request_drain("m.1.a") is True
    assert instance.retiring and instance.state is InstanceState.DRAINING and not sibling.retiring
    # The other gateway: out of routing at its next sync, and its heartbeat answer says drain.
    await second.sync()
    seen = second.registry.get("m.1.a")
    assert seen.retiring and seen.state is InstanceState.DRAINING
    assert (await second.heartbeat("m.1.a", {}, secret)).retiring
    assert not second.registry.get("m.2.b").retiring
    # A restarted gateway finds the request in the store.
    third = gateway(database)
    await third.restore()
    assert third.registry.get("m.1.a").retiring
    # Nothing registered under that id: nothing to ask.
    assert await first.request_drain("no-such-instance") is False
