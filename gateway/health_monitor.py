"""Background health checks: the only thing that moves instances between states.

A probe asks the cheap `/health/details` (never an inference). Servers that are not ours have
no such report; the probe then falls back to `/health`, then `/v1/models`, and remembers which
one the server answers. A connection error makes an instance `unhealthy` at once (from a probe
or from a request the proxy saw fail); it is `ready` again only after `recovery_probes` good
probes in a row, and an instance that fails `flap_threshold` times within `flap_window` gets no
traffic for `flap_cooldown` seconds, whatever its probes say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.health import HealthDetails
from shared.instance_auth import INSTANCE_SECRET_HEADER

log = logging.getLogger("gateway.health")
MAX_REASON = 300  # characters kept of the reason an instance gives for its failure


@dataclass(frozen=True)
class HealthPolicy:
    interval: float = 2.0
    timeout: float = 2.0
    recovery_probes: int = 2
    flap_threshold: int = 3
    flap_window: float = 60.0
    flap_cooldown: float = 30.0
    gone_retention: float = 300.0


@dataclass
class ProbeResult:
    status: str                      # "ok" | "loading" | "draining" | "failed"
    error: str | None = None
    details: HealthDetails | None = None
    served_models: list[str] | None = None
    answered: bool = False           # "failed" told by the instance itself (not a refused connection)


class HealthMonitor:
    def __init__(self, registry: InstanceRegistry, policy: HealthPolicy, *, instance_secret: str | None = None) -> None:
        self.registry = registry
        self.policy = policy
        self._headers = {INSTANCE_SECRET_HEADER: instance_secret} if instance_secret else {}
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task | None = None
        self._probing: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        timeout = httpx.Timeout(self.policy.timeout)
        # Never follow a redirect: the probe carries the instance secret.
        self._client = httpx.AsyncClient(timeout=timeout, headers=self._headers, follow_redirects=False,
                                         limits=httpx.Limits(max_keepalive_connections=64))
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        for task in [self._task, *self._probing.values()]:
            if task:
                task.cancel()
        for task in [self._task, *self._probing.values()]:
            if task:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_all()
                self._forget_gone()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one round must not stop health checks for good
                log.exception("health round failed")
            await asyncio.sleep(max(0.0, self.policy.interval - (time.monotonic() - started)))

    async def probe_all(self) -> None:
        instances = [inst for inst in self.registry.all() if inst.state is not InstanceState.GONE]
        await asyncio.gather(*(self.probe(inst) for inst in instances))

    def probe_soon(self, instance: Instance) -> None:
        """Probe one instance now, outside the regular round (e.g. after it answered 503)."""
        if instance.instance_id in self._probing or self._client is None:
            return
        task = asyncio.create_task(self.probe(instance))
        self._probing[instance.instance_id] = task
        task.add_done_callback(lambda _: self._probing.pop(instance.instance_id, None))

    async def probe(self, instance: Instance) -> None:
        url = instance.url
        started = time.perf_counter()
        result = await self._ask(instance)
        if instance.url != url or instance.state is InstanceState.GONE:
            return  # re-registered elsewhere, or removed, while the probe was in flight
        instance.last_probe_at = time.time()
        instance.last_probe_latency = time.perf_counter() - started
        self.apply(instance, result)
        self.registry.slot_freed(instance)  # requests held for a free slot may go now

    # -- state machine -------------------------------------------------------------------

    def apply(self, instance: Instance, result: ProbeResult) -> None:
        if result.details is not None:
            self._record_details(instance, result.details)
        if result.served_models is not None:
            models = result.served_models
            instance.served_model = None if (not models or instance.model in models) else models[0]
        if instance.retiring:
            instance.last_error = result.error
            self._transition(instance, InstanceState.DRAINING)
            return
        if result.status == "failed":
            if result.answered:
                instance.booting = False  # it answers, and reports a failure: not merely still starting
            self.mark_failed(instance, result.error or "probe failed")
            return
        instance.last_error = None
        if result.status == "loading":
            self._transition(instance, InstanceState.LOADING)
        elif result.status == "draining":
            self._transition(instance, InstanceState.DRAINING)
        elif instance.state is InstanceState.UNHEALTHY:
            instance.good_streak += 1
            if instance.good_streak >= self.policy.recovery_probes and time.monotonic() >= instance.cooldown_until:
                self._transition(instance, InstanceState.READY)
        else:
            self._transition(instance, InstanceState.READY)

    def mark_failed(self, instance: Instance, reason: str) -> None:
        """Unhealthy at once; a failure that ends a ready spell counts towards flapping."""
        instance.good_streak = 0
        instance.last_error = reason
        if instance.state in (InstanceState.GONE, InstanceState.UNHEALTHY) or instance.retiring:
            return
        if instance.booting and instance.state is InstanceState.LOADING:
            return  # started moments ago: not listening yet
        now = time.monotonic()
        instance.failures.append(now)
        recent = [t for t in instance.failures if now - t <= self.policy.flap_window]
        if len(recent) >= self.policy.flap_threshold:
            instance.cooldown_until = now + self.policy.flap_cooldown
            log.warning("instance %s flaps (%d failures in %.0fs): cooling down %.0fs", instance.instance_id,
                        len(recent), self.policy.flap_window, self.policy.flap_cooldown)
        self._transition(instance, InstanceState.UNHEALTHY)

    @staticmethod
    def _transition(instance: Instance, state: InstanceState) -> None:
        before = instance.state
        if instance.set_state(state):
            if state is not InstanceState.UNHEALTHY:
                instance.good_streak = 0
            log.info("instance %s (%s): %s -> %s%s", instance.instance_id, instance.model, before.value, state.value,
                     f" ({instance.last_error})" if instance.last_error else "")

    @staticmethod
    def _record_details(instance: Instance, details: HealthDetails) -> None:
        instance.slots_total = details.slots.total
        instance.slots_active = details.slots.active
        instance.queued = details.queue.queued
        instance.tokens_per_second = details.throughput.tokens_per_second
        instance.uptime_seconds = details.uptime_seconds
        reported_busy = details.slots.active + details.queue.queued
        instance.external_busy = max(0, reported_busy - instance.outstanding)

    def _forget_gone(self) -> None:
        now = time.time()
        for inst in self.registry.all():
            if inst.state is InstanceState.GONE and now - inst.state_since > self.policy.gone_retention:
                self.registry.remove(inst.instance_id)

    # -- probes --------------------------------------------------------------------------

    async def _ask(self, instance: Instance) -> ProbeResult:
        assert self._client is not None
        try:
            if instance.probe_mode == "details":
                result = await self._ask_details(instance)
                if result is not None:
                    return result
                instance.probe_mode = "health"
            if instance.probe_mode == "health":
                result = await self._ask_health(instance)
                if result is not None:
                    if result.status == "ok" and instance.served_model is None and instance.last_probe_at is None:
                        result.served_models = await self._served_models(instance)
                    return result
                instance.probe_mode = "models"
            return await self._ask_models(instance)
        except httpx.HTTPError as exc:
            return ProbeResult("failed", error=f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def _ask_details(self, instance: Instance) -> ProbeResult | None:
        response = await self._client.get(instance.url + "/health/details")
        if response.status_code in (404, 405, 501):
            return None
        try:
            details = HealthDetails.model_validate_json(response.content)
        except ValidationError:
            if response.status_code == 200:
                return None  # answers, but not with our report: a foreign server
            return ProbeResult("failed", error=f"/health/details answered {response.status_code}")
        if details.model != instance.model:
            return ProbeResult("failed", error=f"serves model {details.model!r}, not {instance.model!r}", answered=True)
        status = {"ok": "ok", "loading": "loading", "draining": "draining"}.get(details.status, "failed")
        error = None
        if status == "failed":
            # Why, in the instance's own words: its /health says (the details have no field for it).
            reason = _reason(await self._client.get(instance.url + "/health")) if details.status == "error" else None
            error = f"reports status {details.status}" + (f": {reason}" if reason else "")
        return ProbeResult(status, error=error, details=details, answered=status == "failed")

    async def _ask_health(self, instance: Instance) -> ProbeResult | None:
        response = await self._client.get(instance.url + "/health")
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code == 200:
            return ProbeResult("ok")
        reported = _json_field(response, "status")
        if response.status_code == 503:
            if reported == "error":  # it could not load its model (it will not by waiting)
                reason = _reason(response)
                return ProbeResult("failed", error="reports status error" + (f": {reason}" if reason else ""),
                                   answered=True)
            return ProbeResult("draining" if reported == "draining" else "loading")
        return ProbeResult("failed", error=f"/health answered {response.status_code}")

    async def _ask_models(self, instance: Instance) -> ProbeResult:
        response = await self._client.get(instance.url + "/v1/models")
        if response.status_code != 200:
            return ProbeResult("failed", error=f"/v1/models answered {response.status_code}")
        return ProbeResult("ok", served_models=_model_ids(response))

    async def _served_models(self, instance: Instance) -> list[str] | None:
        try:
            response = await self._client.get(instance.url + "/v1/models")
        except httpx.HTTPError:
            return None
        return _model_ids(response) if response.status_code == 200 else None


def _json_field(response: httpx.Response, name: str) -> Any:
    try:
        data = response.json()
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _reason(response: httpx.Response) -> str | None:
    """The `error` an instance's /health gives, bounded (an instance may be hostile)."""
    reason = _json_field(response, "error")
    return (reason[:MAX_REASON].strip() or None) if isinstance(reason, str) else None


def _model_ids(response: httpx.Response) -> list[str]:
    data = _json_field(response, "data")
    if not isinstance(data, list):
        return []
    return [item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
