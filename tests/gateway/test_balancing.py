"""Balancing strategies and the health state machine, on plain objects (no processes)."""

from __future__ import annotations

from collections import Counter

from gateway.balancing import make_balancer
from gateway.health_monitor import HealthMonitor, HealthPolicy, ProbeResult
from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.catalogue import load_catalogue


def _instances(*loads: tuple[int, int]) -> list[Instance]:
    found = []
    for i, (outstanding, slots) in enumerate(loads):
        inst = Instance(instance_id=f"i{i}", model="m", url=f"http://127.0.0.1:{9000 + i}", state=InstanceState.READY)
        inst.outstanding, inst.slots_total = outstanding, slots
        found.append(inst)
    return found


def test_least_busy_takes_the_lowest_load_per_slot_and_breaks_ties_at_random():
    balancer = make_balancer("least-busy")
    busy, idle = _instances((3, 4), (1, 4))
    assert all(balancer.choose([busy, idle]) is idle for _ in range(20))
    small, large = _instances((1, 1), (2, 8))  # 1/1 slot full vs 2/8: the larger one has room
    assert balancer.choose([small, large]) is large
    ties = Counter(balancer.choose(_instances((0, 4), (0, 4), (0, 4))[0:3]).instance_id for _ in range(300))
    assert len(ties) == 3


def test_power_of_two_never_picks_the_busiest_of_two():
    balancer = make_balancer("power-of-two")
    busy, idle = _instances((5, 2), (0, 2))
    assert all(balancer.choose([busy, idle]) is idle for _ in range(20))
    three = _instances((9, 1), (0, 1), (0, 1))
    picks = Counter(balancer.choose(three).instance_id for _ in range(300))
    assert picks["i0"] == 0 and picks["i1"] and picks["i2"]


def test_reported_work_of_others_counts_as_load():
    ours, shared = _instances((1, 4), (0, 4))
    shared.external_busy = 3  # another gateway keeps it busy
    assert make_balancer("least-busy").choose([ours, shared]) is ours


def test_state_machine_failures_recovery_and_cool_down():
    registry = InstanceRegistry(load_catalogue())
    monitor = HealthMonitor(registry, HealthPolicy(recovery_probes=2, flap_threshold=2, flap_cooldown=60))
    inst = Instance(instance_id="x", model="smollm2-135m", url="http://127.0.0.1:1")
    monitor.apply(inst, ProbeResult("loading"))
    assert inst.state is InstanceState.LOADING
    monitor.apply(inst, ProbeResult("ok"))
    assert inst.state is InstanceState.READY  # from loading, one good probe is enough
    monitor.mark_failed(inst, "ConnectError")
    assert inst.state is InstanceState.UNHEALTHY
    monitor.apply(inst, ProbeResult("ok"))
    assert inst.state is InstanceState.UNHEALTHY  # one good probe is not recovery
    monitor.apply(inst, ProbeResult("ok"))
    assert inst.state is InstanceState.READY
    monitor.mark_failed(inst, "ConnectError")  # second failure in the window: cool down
    for _ in range(5):
        monitor.apply(inst, ProbeResult("ok"))
    assert inst.state is InstanceState.UNHEALTHY and inst.cooldown_until > 0
    monitor.apply(inst, ProbeResult("draining"))
    assert inst.state is InstanceState.DRAINING
