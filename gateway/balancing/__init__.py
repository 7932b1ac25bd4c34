"""Balancing strategies: which ready instance of a model takes the next request.

Each strategy is one file behind the `Balancer` interface: given the ready instances of one
model (never empty) and the request's body (which strategies may read, never change), return one. They read `Instance.load()`: the gateway's own count of
outstanding requests plus what the instance last reported of others' work, per slot.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from gateway.instances import Instance


class Balancer(Protocol):
    name: str

    def choose(self, candidates: Sequence[Instance], body: Mapping[str, Any] | None = None) -> Instance: ...


def make_balancer(name: str) -> Balancer:
    if name == "prefix-affinity":
        from gateway.balancing.prefix_affinity import PrefixAffinityBalancer
        return PrefixAffinityBalancer()
    if name == "least-busy":
        from gateway.balancing.least_busy import LeastBusyBalancer
        return LeastBusyBalancer()
    if name == "power-of-two":
        from gateway.balancing.power_of_two import PowerOfTwoBalancer
        return PowerOfTwoBalancer()
    raise ValueError(f"unknown balancer {name!r}; known: prefix-affinity, least-busy, power-of-two")
