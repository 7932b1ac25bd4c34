"""Starting, draining and rolling-restarting instances at runtime, for whichever fleet the gateway
has (`backends`). Plain asyncio, no HTTP: the routes and the tests drive it directly.

An instance's life as the gateway shows it: ``loading`` (started; `booting` keeps a refused
connection from counting as a failure) -> ``ready`` (probes pass) -> ``draining`` (asked to
stop: `retiring` keeps it out of routing before its process even hears the signal) -> ``gone``
(its process exited, or, on Actions, its runner deregistered).

The spec an instance starts with comes from `spec_for(key)` (default: the catalogue's entry), so
a runtime overlay of the catalogue can be plugged in; a spec that differs from the fleet's own
file travels with the start request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.instance_control.backends import InstanceBackend
from gateway.instance_control.errors import (
    ControlNotConfigured,
    FleetRefused,
    InstanceNotFound,
    ModelHasInstances,
    OperationInProgress,
)
from gateway.instance_control.overlay_publication import Publication
from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.catalogue import Catalogue, CatalogueError, ModelSpec
from shared.errors import ModelNotFound

log = logging.getLogger("gateway.instance_control")

SpecSource = Callable[[str], ModelSpec]
MAX_DISPATCHES_PER_MODEL = 8


@dataclass
class RollingRestart:
    model: str
    total: int
    reason: str
    replaced: int = 0
    state: str = "running"        # running | done | failed
    message: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    again: bool = False           # asked again while running: one more pass when this one ends

    def public(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state, "replaced": self.replaced, "total": self.total,
                "reason": self.reason, "message": self.message, "started_at": self.started_at,
                "finished_at": self.finished_at}


@dataclass
class Dispatch:
    """A start on Actions: a run that will register an instance, shown until one appears."""

    model: str
    at: float
    known: set[str]               # the model's instance ids when it was dispatched
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"model": self.model, "state": "dispatched", "at": self.at, **self.detail}

    def registered(self, registry: InstanceRegistry) -> bool:
        """Its runner has registered: the instance id it was given, else any new one of the model."""
        expected = self.detail.get("expected_instance_id")
        if expected:
            return registry.get(expected) is not None
        return any(i.instance_id not in self.known and i.source == "registered" for i in registry.for_model(self.model))


class InstanceController:
    def __init__(self, registry: InstanceRegistry, backend: InstanceBackend | None, *,
                 spec_for: SpecSource | None = None, model_keys: Callable[[], list[str]] | None = None,
                 fleet_catalogue: Catalogue | None = None, not_configured: str = "", ready_timeout: float = 600.0, drain_timeout: float = 180.0,
                 check_interval: float = 0.2) -> None:
        self.registry = registry
        self.backend = backend
        self.spec_for: SpecSource = spec_for or (lambda key: registry.catalogue.model(key))
        self.model_keys = model_keys or (lambda: list(registry.catalogue.models))
        # The catalogue file the fleet's processes read: a spec equal to its entry is not sent.
        self.fleet_catalogue = fleet_catalogue or registry.catalogue
        self.not_configured = not_configured
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.check_interval = check_interval
        self.restarts: dict[str, RollingRestart] = {}
        self.dispatches: list[Dispatch] = []
        self._tasks: set[asyncio.Task] = set()
        # Per model, one start or removal at a time: a second `load` waits, then sees the first's
        # instance; a removal waits for a start and sees its instance. A lock is dropped once
        # no one holds or waits on it (`_lock_users` counts both).
        self._loading: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self.on_restart_finished: list[Callable[[RollingRestart], Awaitable[None]]] = []

    # -- what is asked ----------------------------------------------------------------------

    def spec(self, model: str) -> ModelSpec:
        try:
            return self.spec_for(model)
        except (KeyError, CatalogueError):
            raise ModelNotFound(model) from None

    def _backend(self) -> InstanceBackend:
        if self.backend is None:
            raise ControlNotConfigured(self.not_configured)
        return self.backend

    async def publish_overlay(self, *, actor: str = "", reason: str = "") -> Publication:
        """Publish the runtime catalogue overlay to the fleet's repository (Actions), where the
        runners read it. Refused with no fleet, or with the local one (it reads the gateway's own)."""
        publisher = getattr(self._backend(), "publisher", None)
        if publisher is None:
            raise FleetRefused("Publishing the catalogue overlay is for the fleet on GitHub Actions (with the admin "
                               "side's overlay); the local fleet reads the overlay from the gateway itself.")
        return await publisher.publish(actor=actor, reason=reason)

    def live(self, model: str) -> list[Instance]:
        return [i for i in self.registry.for_model(model) if i.state is not InstanceState.GONE and not i.retiring]

    @asynccontextmanager
    async def _model_lock(self, model: str) -> AsyncIterator[None]:
        lock = self._loading.setdefault(model, asyncio.Lock())
        self._lock_users[model] = self._lock_users.get(model, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[model] -= 1
            if not self._lock_users[model]:
                del self._lock_users[model], self._loading[model]

    @asynccontextmanager
    async def removal(self, model: str) -> AsyncIterator[None]:
        """`async with removal(model):` remove the model from the catalogue in the body. No start
        of it runs meanwhile: one under way is waited for (its instance then refuses the removal,
        `check_can_remove`); one asked meanwhile waits, then finds the model gone."""
        async with self._model_lock(model):
            self.check_can_remove(model)
            yield

    async def start(self, model: str) -> dict[str, Any]:
        """Start one instance of `model`: at once in the registry (loading) when the fleet names
        it, or as a pending dispatch (Actions) until its runner registers."""
        self.spec(model)
        async with self._model_lock(model):
            return await self._start(model)

    async def _start(self, model: str) -> dict[str, Any]:
        spec = self.spec(model)
        backend = self._backend()
        base = self.fleet_catalogue.models.get(model)
        started = await backend.start(model, None if spec == base else spec)
        if started.instance_id is not None and started.url is not None:
            instance = Instance(instance_id=started.instance_id, model=model, url=started.url, source="local",
                                capacity_hint=spec.parallel, booting=True)
            self.registry.add(instance)
            log.info("started instance %s of %s at %s", instance.instance_id, model, instance.url)
            return {"object": "instance", "instance": instance.public(), **started.detail}
        mine = [d for d in self.dispatches if d.model == model]
        if len(mine) >= MAX_DISPATCHES_PER_MODEL:
            self.dispatches.remove(mine[0])
        dispatch = Dispatch(model, time.time(), {i.instance_id for i in self.registry.for_model(model)},
                            started.detail)
        self.dispatches.append(dispatch)
        log.info("dispatched a runner of %s: %s", model, started.detail)
        return {"object": "dispatch", "dispatch": dispatch.public()}

    async def stop(self, instance_id: str) -> dict[str, Any]:
        """Drain one instance: out of routing at once, then its process is signalled (local) or
        its run cancelled (Actions); it is gone once that process has exited."""
        instance = self.registry.get(instance_id)
        if instance is None or instance.state is InstanceState.GONE:
            raise InstanceNotFound(instance_id)
        backend = self._backend()
        if instance.retiring:
            return {"object": "instance", "instance": instance.public()}
        before = instance.state
        instance.retiring = True
        instance.set_state(InstanceState.DRAINING)
        try:
            detail = await backend.stop(instance)
        except BaseException:
            instance.retiring = False
            instance.set_state(before)
            raise
        log.info("draining instance %s of %s", instance_id, instance.model)
        return {"object": "instance", "instance": instance.public(), **detail}

    def check_can_remove(self, model: str) -> None:
        """A model leaves the catalogue only once nothing runs it: its instances (ready, loading
        or draining, local or registered) are named in a `ModelHasInstances` otherwise."""
        running = [i for i in self.registry.for_model(model) if i.state is not InstanceState.GONE]
        pending = [d for d in self.dispatches if d.model == model]
        if not running and not pending:
            return
        names = ", ".join(f"{i.instance_id} ({i.state.value})" for i in running[:20])
        if pending:
            names += (", " if names else "") + f"{len(pending)} dispatched runner(s) not yet registered"
        raise ModelHasInstances(f"{model} still has instances: {names}. Unload it first "
                                f"(POST /v1/models/{model}?action=unload) and delete it once they are gone.")

    async def load(self, model: str) -> dict[str, Any]:
        """`action=load`: start one instance unless one is ready or on its way. Loads of one
        model are serialized, so two at once start one instance (the second sees it loading)."""
        self.spec(model)
        async with self._model_lock(model):
            self.spec(model)  # removed while this load waited: a 404
            live = self.live(model)
            if any(i.state is InstanceState.READY for i in live):
                status, started = "loaded", None
            elif live or any(d.model == model for d in self.dispatches):
                status, started = "loading", None
            else:
                status, started = "loading", await self._start(model)
        return {"id": model, "object": "model", "action": "load", "status": status, "started": started,
                "instances": [i.public() for i in self.registry.for_model(model)]}

    async def unload(self, model: str) -> dict[str, Any]:
        """`action=unload`: drain every instance of the model (and, on Actions, cancel its runs)."""
        self.spec(model)
        backend = self._backend()
        live = self.live(model)
        stop_model = getattr(backend, "stop_model", None)
        cancelled: list[Any] = []
        kept: list[str] = []
        if stop_model is None:
            for instance in live:
                await self.stop(instance.instance_id)
        else:
            # Actions: cancel every run of the model; its instances drain as their runners stop.
            runs = await stop_model(model)
            cancelled = [run.html_url or run.id for run in runs]
            ids = {run.labels.instance_id for run in runs if run.labels}
            for instance in live:
                if instance.instance_id in ids or ("" in ids and instance.source == "registered"):
                    instance.retiring = True
                    instance.set_state(InstanceState.DRAINING)
                else:
                    kept.append(instance.instance_id)  # not run by this fleet's workflow
            self.dispatches = [d for d in self.dispatches if d.model != model]
        restart = self.restarts.get(model)
        if restart is not None and restart.state == "running":
            restart.again = False
        status = "unloading" if len(live) > len(kept) or cancelled else "unloaded"
        return {"id": model, "object": "model", "action": "unload", "status": status,
                "instances": [i.public() for i in self.registry.for_model(model)], "cancelled_runs": cancelled,
                "not_stopped": kept}

    def rolling_restart(self, model: str, *, reason: str = "asked", coalesce: bool = False) -> RollingRestart:
        """Replace the model's instances one at a time, in the background: a new instance is
        started and must be ready before an old one drains, so the model never has fewer ready
        instances than before. `coalesce`: when one is running, run once more after it instead
        of refusing (a settings change during a restart must still reach every instance)."""
        self.spec(model)
        self._backend()
        current = self.restarts.get(model)
        if current is not None and current.state == "running":
            if not coalesce:
                raise OperationInProgress(f"A rolling restart of {model} is already running "
                                          f"({current.replaced}/{current.total} replaced).")
            current.again = True
            return current
        restart = RollingRestart(model, 0, reason)
        self.restarts[model] = restart
        self._spawn(self._roll(restart))
        return restart

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _roll(self, restart: RollingRestart) -> None:
        try:
            while True:
                old = self.live(restart.model)
                restart.total += len(old)
                for instance in old:
                    if instance.retiring or self.registry.get(instance.instance_id) is not instance:
                        restart.replaced += 1
                        continue
                    await self._replace(restart, instance)
                    restart.replaced += 1
                if not restart.again:
                    break
                restart.again = False
            restart.state = "done"
        except Exception as exc:  # the page shows why; the old instances stay
            restart.state = "failed"
            restart.message = str(exc) or type(exc).__name__
            log.warning("rolling restart of %s failed: %s", restart.model, restart.message)
        finally:
            restart.finished_at = time.time()
            for hook in self.on_restart_finished:
                try:
                    await hook(restart)
                except Exception:
                    log.exception("rolling restart hook failed")

    async def _replace(self, restart: RollingRestart, old: Instance) -> None:
        before = {i.instance_id for i in self.registry.for_model(restart.model)}
        started = await self.start(restart.model)
        new_id = started.get("instance", {}).get("instance_id")

        def new_ready() -> bool:
            return any(i.instance_id not in before and not i.retiring
                       for i in self.registry.ready(restart.model))

        if not await self._wait(new_ready, self.ready_timeout):
            if new_id is not None and self.registry.get(new_id) is not None:
                await self.stop(new_id)
            raise RuntimeError(f"the replacement of {old.instance_id} was not ready after {self.ready_timeout:.0f}s; "
                               "the old instances keep serving")
        await self.stop(old.instance_id)
        await self._wait(lambda: old.state is InstanceState.GONE, self.drain_timeout)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.check_interval)
        return True

    # -- what the fleet did -------------------------------------------------------------------

    async def watch(self) -> None:
        """One look at the fleet: draining instances whose process is gone become gone; processes
        the registry lacks (a restarted gateway) are adopted; dispatches whose runner registered
        are done. Booting instances stop being so once ready, or after `ready_timeout`."""
        now = time.time()
        for instance in self.registry.all():
            if instance.booting and (instance.state is not InstanceState.LOADING
                                     or now - instance.state_since > self.ready_timeout):
                instance.booting = False
        self.dispatches = [d for d in self.dispatches if now - d.at < self.ready_timeout and not d.registered(self.registry)]
        if self.backend is None:
            return
        processes = await self.backend.processes()
        if processes is None:
            return
        by_id = {p.instance_id: p for p in processes}
        for instance in self.registry.all():
            if instance.state is InstanceState.GONE or instance.source == "registered":
                continue
            process = by_id.get(instance.instance_id)
            if instance.retiring and (process is None or process.state == "exited"):
                instance.set_state(InstanceState.GONE)
                log.info("instance %s of %s: gone", instance.instance_id, instance.model)
            elif process is None and instance.source == "static" and not instance.retiring:
                # Named at start-up, but the fleet no longer runs it (drained before this gateway started).
                instance.set_state(InstanceState.GONE)
        for process in processes:
            known = self.registry.get(process.instance_id)
            if process.url and process.state == "running" and (known is None or known.state is InstanceState.GONE):
                self.registry.add(Instance(instance_id=process.instance_id, model=process.model, url=process.url,
                                           source="local"))

    def view(self) -> dict[str, Any]:
        """Every model with its instances, its pending dispatches and its last rolling restart."""
        keys = self.model_keys()
        known = set(keys)
        keys += sorted({i.model for i in self.registry.all()} - known)
        models = []
        for key in keys:
            try:
                spec = self.spec(key)
                name = spec.display_name
            except ModelNotFound:
                name = key
            restart = self.restarts.get(key)
            models.append({"key": key, "display_name": name,
                           "instances": [i.public() for i in self.registry.for_model(key)],
                           "dispatches": [d.public() for d in self.dispatches if d.model == key],
                           "rolling_restart": restart.public() if restart else None})
        return {"object": "list", "data": models}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.backend is not None:
            await self.backend.close()
