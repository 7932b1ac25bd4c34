"""An instance that answers its probes but could not load its model: the real health monitor, over
real HTTP, makes it unhealthy at once, even while it boots, with the reason it gives (bounded).
A real model process in that state is driven through the browser in
`tests/admin/test_story_browser.py`; here a server that has only `/health`, as servers that are
not ours do."""

from __future__ import annotations

import json

import pytest

from gateway.health_monitor import MAX_REASON, HealthMonitor, HealthPolicy
from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.catalogue import load_catalogue
from tests.loopback import LoopbackServer, QuietHandler

CATALOGUE = load_catalogue()
MODEL = next(iter(CATALOGUE.models))


def serve(health: dict, status: int) -> LoopbackServer:
    """/health answers `health` with `status`; every other path is a 404."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            code, body = (status, json.dumps(health).encode()) if self.path == "/health" else (404, b"{}")
            self.reply(code, {"Content-Type": "application/json"}, body)

    return LoopbackServer(Handler, "instance-health")


@pytest.mark.parametrize("health, status, state, error", [
    ({"status": "error", "error": "no such repository " + "x" * 5000}, 503, InstanceState.UNHEALTHY,
     "reports status error: no such repository " + "x" * (MAX_REASON - len("no such repository "))),
    ({"status": "error"}, 503, InstanceState.UNHEALTHY, "reports status error"),
    ({"status": "loading"}, 503, InstanceState.LOADING, None),
])
async def test_a_booting_instance_that_reports_an_error_is_unhealthy_with_its_reason(health, status, state, error):
    server = serve(health, status)
    registry = InstanceRegistry(CATALOGUE)
    instance = registry.add(Instance(instance_id="booting-0", model=MODEL, source="local", booting=True,
                                     url=server.url))
    monitor = HealthMonitor(registry, HealthPolicy(interval=3600))
    await monitor.start()
    try:
        assert instance.state is InstanceState.LOADING
        await monitor.probe(instance)
        assert (instance.state, instance.last_error) == (state, error)
    finally:
        await monitor.stop()
        server.close()
