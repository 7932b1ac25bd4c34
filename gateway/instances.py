"""The instances the gateway knows, and their state.

An `Instance` is one OpenAI-compatible server serving one catalogue model. It is *static*
(from the catalogue or the environment, see `static_instances`) or *registered* (it announced
itself through `/api/instances` and lives as long as its heartbeats). The `HealthMonitor`
moves it between states; the balancer only ever sees `ready` ones.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, AsyncIterator, Callable, Iterable

from shared.catalogue import Catalogue


class InstanceState(str, Enum):
    LOADING = "loading"      # not yet known to serve (first probe pending, or model loading)
    READY = "ready"          # takes traffic
    DRAINING = "draining"    # finishing in-flight work, takes no new requests
    UNHEALTHY = "unhealthy"  # failed a probe or a connection; waits for good probes in a row
    GONE = "gone"            # deregistered or expired; kept a while for the status page


@dataclass(eq=False)
class Instance:
    instance_id: str
    model: str
    url: str
    source: str = "static"                 # "static" | "registered" | "local" (started at runtime by `arena up`)
    state: InstanceState = InstanceState.LOADING
    state_since: float = field(default_factory=time.time)
    expires_at: float | None = None        # registered instances only (epoch seconds)
    registered_at: float | None = None
    capacity_hint: int = 1                 # slots assumed until the instance reports its own
    # Set by runtime instance control (gateway.instance_control): `booting`, just started, so a
    # refused connection means "not listening yet" (it stays loading); `retiring`, asked to
    # drain, so it stays draining until its process is gone, whatever its probes say.
    booting: bool = False
    retiring: bool = False
    # A registered instance asked to drain alone (a fleet-up runner): its runner is told at its
    # next heartbeat (`drain_heard_at`, when this gateway answered it).
    drain_requested_at: float | None = None
    drain_heard_at: float | None = None

    # The gateway's own counts.
    outstanding: int = 0
    requests_total: int = 0
    errors_total: int = 0

    # Last probe.
    last_probe_at: float | None = None
    last_probe_latency: float | None = None
    last_error: str | None = None
    good_streak: int = 0
    failures: deque = field(default_factory=lambda: deque(maxlen=32))  # monotonic times of failures
    cooldown_until: float = 0.0
    probe_mode: str = "details"            # "details" | "health" | "models": what this server answers
    served_model: str | None = None        # the model id a foreign server wants in requests

    # What the instance reported in /health/details (None when it has no such report).
    slots_total: int | None = None
    slots_active: int | None = None
    queued: int | None = None
    tokens_per_second: float | None = None
    uptime_seconds: float | None = None
    external_busy: int = 0                 # requests the instance had that were not ours
    on_release: Callable[["Instance"], None] | None = field(default=None, repr=False)  # set by the registry

    @property
    def capacity(self) -> int:
        return max(1, self.slots_total or self.capacity_hint)

    @property
    def busy(self) -> int:
        """Requests on this instance now: ours, plus others it reported at the last probe."""
        return self.outstanding + self.external_busy

    def has_free_slot(self) -> bool:
        return self.busy < self.capacity

    def load(self) -> float:
        """Busy requests per slot; above 1.0 requests wait in the instance's queue."""
        return self.busy / self.capacity

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """One request of ours on this instance for the duration of the block."""
        self.outstanding += 1
        try:
            yield
        finally:
            self.outstanding -= 1
            if self.on_release is not None:
                self.on_release(self)

    def set_state(self, state: InstanceState) -> bool:
        if state is self.state:
            return False
        self.state = state
        self.state_since = time.time()
        return True

    def public(self, *, show_url: bool = True) -> dict[str, Any]:
        """The instance as the API shows it; anonymous views leave out its URL (a tunnel URL is
        where anyone could reach the instance directly)."""
        now = time.time()
        return {
            "instance_id": self.instance_id,
            "model": self.model,
            **({"url": self.url} if show_url else {}),
            "source": self.source,
            "state": self.state.value,
            "state_since": self.state_since,
            "expires_at": self.expires_at,
            "registered_at": self.registered_at,
            "outstanding": self.outstanding,
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "last_probe_at": self.last_probe_at,
            "last_probe_latency_ms": None if self.last_probe_latency is None else round(self.last_probe_latency * 1000, 2),
            "last_error": self.last_error,
            "cooling_down": self.cooldown_until > time.monotonic(),
            "probe_mode": self.probe_mode,
            "slots_total": self.slots_total,
            "active": self.slots_active if self.slots_active is not None else self.outstanding,
            "queued": self.queued,
            "tokens_per_second": self.tokens_per_second,
            "uptime_seconds": self.uptime_seconds,
            "seconds_in_state": round(now - self.state_since, 1),
            "drain_requested": self.drain_requested_at is not None,
            "drain_heard": self.drain_heard_at is not None,
        }


class InstanceRegistry:
    """Every instance the gateway knows, by id, in catalogue order of models."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._by_id: dict[str, Instance] = {}
        self.slot_listeners: list[Callable[[Instance], None]] = []  # told when an instance may have room

    def slot_freed(self, instance: Instance) -> None:
        if instance.state is InstanceState.READY and instance.has_free_slot():
            for listener in self.slot_listeners:
                listener(instance)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def add(self, instance: Instance) -> Instance:
        if instance.capacity_hint <= 1 and instance.model in self.catalogue.models:
            instance.capacity_hint = self.catalogue.models[instance.model].parallel
        instance.on_release = self.slot_freed
        self._by_id[instance.instance_id] = instance
        return instance

    def remove(self, instance_id: str) -> Instance | None:
        return self._by_id.pop(instance_id, None)

    def all(self) -> list[Instance]:
        return list(self._by_id.values())

    def for_model(self, model: str) -> list[Instance]:
        return [inst for inst in self._by_id.values() if inst.model == model]

    def ready(self, model: str) -> list[Instance]:
        return [inst for inst in self._by_id.values() if inst.model == model and inst.state is InstanceState.READY]

    def is_known_model(self, model: str) -> bool:
        return model in self.catalogue.models

    def ready_models(self) -> list[str]:
        """Keys of models with at least one ready instance, in catalogue order."""
        ready = {inst.model for inst in self._by_id.values() if inst.state is InstanceState.READY}
        return [key for key in self.catalogue.models if key in ready]

    def models(self) -> Iterable[str]:
        return self.catalogue.models.keys()
