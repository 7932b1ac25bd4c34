"""The instance controller's logic without HTTP: a fleet that records what it is asked (the
fleet's side, processes, is what `test_local_fleet_control.py` runs for real), the gateway's real
registry, and the real health monitor's state machine fed probe results."""

from __future__ import annotations

import asyncio

import pytest

from gateway.health_monitor import HealthMonitor, HealthPolicy, ProbeResult
from gateway.instance_control.backends import FleetProcess, Started
from gateway.instance_control.controller import InstanceController
from gateway.instance_control.errors import (ControlNotConfigured, InstanceNotFound, OperationInProgress,
                                             SupervisorUnavailable)
from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.catalogue import load_catalogue
from shared.errors import ModelNotFound

SMOL = "smollm2-135m"


class RecordingFleet:
    """The fleet side: names each started process, remembers every call in order."""

    kind = "local"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.specs: list[object] = []
        self.running: dict[str, FleetProcess] = {}
        self.serial = 0
        self.fail_next_stop = False

    async def start(self, model, spec):
        self.serial += 1
        name = f"{model}-{self.serial}"
        self.calls.append(("start", name))
        self.specs.append(spec)
        self.running[name] = FleetProcess(name, model, f"http://127.0.0.1:{9000 + self.serial}", "running")
        return Started(name, self.running[name].url)

    async def stop(self, instance):
        if self.fail_next_stop:
            self.fail_next_stop = False
            raise SupervisorUnavailable("the supervisor did not answer")
        self.calls.append(("stop", instance.instance_id))
        process = self.running[instance.instance_id]
        self.running[instance.instance_id] = FleetProcess(process.instance_id, process.model, process.url, "stopping")
        return {}

    def exit(self, instance_id: str) -> None:
        del self.running[instance_id]

    async def processes(self):
        return list(self.running.values())

    async def close(self):
        pass


@pytest.fixture
def setup():
    catalogue = load_catalogue()
    registry = InstanceRegistry(catalogue)
    monitor = HealthMonitor(registry, HealthPolicy(recovery_probes=2))
    fleet = RecordingFleet()
    controller = InstanceController(registry, fleet, ready_timeout=5, drain_timeout=5, check_interval=0.01)
    return registry, monitor, fleet, controller


def probe(monitor, registry, instance_id, status="ok", error=None):
    monitor.apply(registry.get(instance_id), ProbeResult(status, error=error))


async def play_the_fleet(setup, restart) -> None:
    """Until the rolling restart ends: new processes answer their probes, drained ones exit."""
    registry, monitor, fleet, controller = setup
    while restart.state == "running":
        for inst in registry.for_model(SMOL):
            if inst.state is InstanceState.LOADING:
                probe(monitor, registry, inst.instance_id)
            if inst.retiring and inst.instance_id in fleet.running:
                fleet.exit(inst.instance_id)
        await controller.watch()
        await asyncio.sleep(0.01)


async def test_a_started_instance_stays_loading_until_it_answers_then_is_ready(setup):
    registry, monitor, fleet, controller = setup
    started = await controller.start(SMOL)
    instance_id = started["instance"]["instance_id"]
    assert started["instance"]["state"] == "loading" and started["instance"]["source"] == "local"
    probe(monitor, registry, instance_id, "failed", "ConnectError")  # not listening yet
    assert registry.get(instance_id).state is InstanceState.LOADING
    probe(monitor, registry, instance_id, "loading")
    probe(monitor, registry, instance_id)
    assert registry.get(instance_id).state is InstanceState.READY
    await controller.watch()
    assert not registry.get(instance_id).booting  # from now on a failure is a failure
    probe(monitor, registry, instance_id, "failed", "ConnectError")
    assert registry.get(instance_id).state is InstanceState.UNHEALTHY


async def test_a_stopped_instance_drains_whatever_its_probes_say_and_is_gone_once_its_process_exits(setup):
    registry, monitor, fleet, controller = setup
    instance_id = (await controller.start(SMOL))["instance"]["instance_id"]
    probe(monitor, registry, instance_id)
    await controller.stop(instance_id)
    instance = registry.get(instance_id)
    assert instance.state is InstanceState.DRAINING and registry.ready(SMOL) == []
    probe(monitor, registry, instance_id)  # still answering ok before it heard SIGTERM
    probe(monitor, registry, instance_id, "failed", "ConnectError")
    assert instance.state is InstanceState.DRAINING
    await controller.watch()
    assert instance.state is InstanceState.DRAINING  # its process is still draining
    fleet.exit(instance_id)
    await controller.watch()
    assert instance.state is InstanceState.GONE
    with pytest.raises(InstanceNotFound):
        await controller.stop(instance_id)


async def test_a_stop_the_fleet_refuses_leaves_the_instance_serving(setup):
    registry, monitor, fleet, controller = setup
    instance_id = (await controller.start(SMOL))["instance"]["instance_id"]
    probe(monitor, registry, instance_id)
    fleet.fail_next_stop = True
    with pytest.raises(SupervisorUnavailable):
        await controller.stop(instance_id)
    assert registry.get(instance_id).state is InstanceState.READY and not registry.get(instance_id).retiring


async def test_load_starts_one_instance_only_when_none_is_ready_or_on_its_way_and_unload_drains_all(setup):
    registry, monitor, fleet, controller = setup
    first = await controller.load(SMOL)
    assert first["status"] == "loading" and len(fleet.calls) == 1
    assert (await controller.load(SMOL))["status"] == "loading" and len(fleet.calls) == 1  # on its way
    probe(monitor, registry, fleet.calls[0][1])
    assert (await controller.load(SMOL))["status"] == "loaded" and len(fleet.calls) == 1
    await controller.start(SMOL)
    unloaded = await controller.unload(SMOL)
    assert unloaded["status"] == "unloading"
    assert [c for c in fleet.calls if c[0] == "stop"] == [("stop", f"{SMOL}-1"), ("stop", f"{SMOL}-2")]
    for name in list(fleet.running):
        fleet.exit(name)
    await controller.watch()
    assert (await controller.unload(SMOL))["status"] == "unloaded"
    with pytest.raises(ModelNotFound):
        await controller.load("no-such-model")


async def test_rolling_restart_starts_each_replacement_and_waits_for_it_before_draining_an_old_one(setup):
    registry, monitor, fleet, controller = setup
    for _ in range(2):
        probe(monitor, registry, (await controller.start(SMOL))["instance"]["instance_id"])
    fleet.calls.clear()
    fewest_ready = []

    async def fleet_comes_up():
        """Plays the fleet: new processes answer, drained ones exit; notes the ready count."""
        while True:
            fewest_ready.append(len(registry.ready(SMOL)))
            for inst in registry.for_model(SMOL):
                if inst.state is InstanceState.LOADING:
                    probe(monitor, registry, inst.instance_id)
                if inst.retiring and fleet.running.get(inst.instance_id, None) and \
                        fleet.running[inst.instance_id].state == "stopping":
                    fleet.exit(inst.instance_id)
            await controller.watch()
            await asyncio.sleep(0.01)

    helper = asyncio.create_task(fleet_comes_up())
    restart = controller.rolling_restart(SMOL)
    with pytest.raises(OperationInProgress):
        controller.rolling_restart(SMOL)
    while restart.state == "running":
        await asyncio.sleep(0.01)
    helper.cancel()
    assert restart.state == "done" and restart.replaced == restart.total == 2
    assert fleet.calls == [("start", f"{SMOL}-3"), ("stop", f"{SMOL}-1"), ("start", f"{SMOL}-4"), ("stop", f"{SMOL}-2")]
    assert min(fewest_ready) >= 2
    assert sorted(i.instance_id for i in registry.ready(SMOL)) == [f"{SMOL}-3", f"{SMOL}-4"]


async def test_a_replacement_that_never_gets_ready_fails_the_restart_and_the_old_instance_stays(setup):
    registry, monitor, fleet, controller = setup
    controller.ready_timeout = 0.2
    old = (await controller.start(SMOL))["instance"]["instance_id"]
    probe(monitor, registry, old)
    restart = controller.rolling_restart(SMOL)
    while restart.state == "running":
        await asyncio.sleep(0.01)
    assert restart.state == "failed" and "not ready" in restart.message
    assert [i.instance_id for i in registry.ready(SMOL)] == [old]
    assert fleet.calls == [("start", f"{SMOL}-1"), ("start", f"{SMOL}-2"), ("stop", f"{SMOL}-2")]


async def test_a_settings_change_during_a_restart_runs_it_once_more(setup):
    registry, monitor, fleet, controller = setup
    probe(monitor, registry, (await controller.start(SMOL))["instance"]["instance_id"])
    fleet.calls.clear()
    restart = controller.rolling_restart(SMOL, reason="settings changed", coalesce=True)
    assert controller.rolling_restart(SMOL, reason="settings changed", coalesce=True) is restart
    await play_the_fleet(setup, restart)
    assert restart.state == "done" and restart.total == 2
    assert [c[0] for c in fleet.calls] == ["start", "stop", "start", "stop"]


async def test_the_spec_comes_from_the_pluggable_source_and_travels_only_when_it_differs(setup):
    registry, monitor, fleet, controller = setup
    base = registry.catalogue.model(SMOL)
    changed = base.model_copy(update={"n_ctx": 1024})
    await controller.start(SMOL)
    controller.spec_for = lambda key: changed if key == SMOL else registry.catalogue.model(key)
    await controller.start(SMOL)
    assert fleet.specs == [None, changed]


async def test_a_restarted_gateway_adopts_the_fleet_and_forgets_what_was_drained_meanwhile(setup):
    registry, monitor, fleet, controller = setup
    registry.add(Instance(instance_id=f"{SMOL}-0", model=SMOL, url="http://127.0.0.1:9000", source="static"))
    fleet.running[f"{SMOL}-7"] = FleetProcess(f"{SMOL}-7", SMOL, "http://127.0.0.1:9007", "running")
    await controller.watch()
    assert registry.get(f"{SMOL}-0").state is InstanceState.GONE
    adopted = registry.get(f"{SMOL}-7")
    assert adopted.source == "local" and adopted.state is InstanceState.LOADING


async def test_without_a_fleet_every_operation_says_how_to_configure_one(setup):
    registry, monitor, fleet, controller = setup
    controller.backend = None
    controller.not_configured = "set ARENA_FLEETCTL_GITHUB_REPOSITORY"
    for call in (controller.start(SMOL), controller.unload(SMOL), controller.load(SMOL)):
        with pytest.raises(ControlNotConfigured, match="ARENA_FLEETCTL_GITHUB_REPOSITORY"):
            await call
    with pytest.raises(ControlNotConfigured):
        controller.rolling_restart(SMOL)


async def test_with_the_runtime_overlay_a_settings_change_restarts_the_model_and_new_models_start(setup, tmp_path):
    from gateway.admin.catalogue_overlay import CatalogueOverlay
    from gateway.instance_control import plug_overlay
    from gateway.store import Database

    registry, monitor, fleet, controller = setup
    db = Database(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await db.upgrade()
    try:
        overlay = CatalogueOverlay(registry.catalogue, db)
        await overlay.load()
        audited = []

        async def audit(actor, action, target, detail):
            audited.append((actor, action, target))

        plug_overlay(controller, overlay, audit)
        await overlay.update_settings(SMOL, {"n_ctx": 1024})  # nothing runs it: nothing to restart
        assert SMOL not in controller.restarts
        await controller.start(SMOL)
        assert fleet.specs[-1].n_ctx == 1024  # the overlay's spec travels with the start
        probe(monitor, registry, fleet.calls[-1][1])
        fleet.calls.clear()
        await overlay.update_settings(SMOL, {"n_ctx": 1536})
        restart = controller.restarts[SMOL]
        assert restart.reason == "settings changed"
        assert audited == [("settings", "instance.rolling_restart", SMOL)]
        await play_the_fleet(setup, restart)
        assert restart.state == "done" and [c[0] for c in fleet.calls] == ["start", "stop"]
        assert fleet.specs[-1].n_ctx == 1536

        runtime = overlay.base.model(SMOL).model_copy(update={"key": "smol-copy", "port": 9555})
        await overlay.add_model(runtime)
        await controller.start("smol-copy")
        assert fleet.specs[-1].key == "smol-copy"
        assert "smol-copy" in [m["key"] for m in controller.view()["data"]]
    finally:
        await db.dispose()


async def test_on_actions_a_settings_change_is_published_to_the_repository_the_runners_read(tmp_path):
    """Runners read the overlay file of their checkout: on Actions a settings change is published
    there (one commit through the contents API) before anything is restarted, so the runs the
    rolling restart dispatches read the new settings. With nothing running, nothing is dispatched."""
    import httpx
    import yaml

    from gateway.admin.catalogue_overlay import CatalogueOverlay
    from gateway.instance_control import plug_overlay
    from gateway.instance_control.backends import ActionsFleet
    from gateway.store import Database
    from scripts.github_api import GitHubClient
    from tests.fleet.fake_github import FakeGitHub

    fake = FakeGitHub("arena/fleet", "actions-token")
    client = GitHubClient("arena/fleet", "actions-token", transport=httpx.MockTransport(fake.handle), attempts=1)
    db = Database(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await db.upgrade()
    try:
        overlay = CatalogueOverlay(load_catalogue(), db)
        await overlay.load()
        catalogue = load_catalogue()
        controller = InstanceController(InstanceRegistry(catalogue), ActionsFleet(client))
        plug_overlay(controller, overlay)
        assert not overlay.restart_needed()
        await overlay.update_settings(SMOL, {"n_ctx": 4096})
        published = yaml.safe_load(fake.file("config/catalogue.overlay.yaml"))
        assert published == {"models": {SMOL: {"n_ctx": 4096}}}
        assert [c["path"] for c in fake.commits] == ["config/catalogue.overlay.yaml"]
        assert fake.dispatches == [] and controller.restarts == {}
        assert controller.spec_for(SMOL).n_ctx == 4096  # starts take the overlay's spec
    finally:
        await controller.close()
        await db.dispose()
