"""Instances that register themselves: stored in SQLite so they survive a gateway restart.

A registration lives `ttl_seconds` past its last heartbeat. Deregistration and heartbeats
name one instance id, so a runner handing off to its successor (maybe at the same public URL)
can only ever remove itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.db import SqliteDatabase
from gateway.instances import Instance, InstanceRegistry, InstanceState
from shared.errors import ApiError, model_not_found

log = logging.getLogger("gateway.registration")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    instance_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    url TEXT NOT NULL,
    ttl_seconds INTEGER NOT NULL,
    registered_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Registration:
    instance_id: str
    model: str
    url: str
    ttl_seconds: int
    registered_at: float
    expires_at: float


class RegistrationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.script(_SCHEMA)

    def upsert(self, reg: Registration) -> None:
        self.db.execute(
            "INSERT INTO registrations (instance_id, model, url, ttl_seconds, registered_at, expires_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(instance_id) DO UPDATE SET model=excluded.model, url=excluded.url, "
            "ttl_seconds=excluded.ttl_seconds, registered_at=excluded.registered_at, expires_at=excluded.expires_at",
            (reg.instance_id, reg.model, reg.url, reg.ttl_seconds, reg.registered_at, reg.expires_at))

    def renew(self, instance_id: str, ttl_seconds: int, now: float) -> bool:
        return self.db.execute_count("UPDATE registrations SET ttl_seconds=?, expires_at=? WHERE instance_id=?",
                                     (ttl_seconds, now + ttl_seconds, instance_id)) > 0

    def delete(self, instance_id: str) -> bool:
        return self.db.execute_count("DELETE FROM registrations WHERE instance_id=?", (instance_id,)) > 0

    def active(self, now: float) -> list[Registration]:
        rows = self.db.execute("SELECT * FROM registrations WHERE expires_at > ?", (now,))
        return [Registration(**dict(row)) for row in rows]

    def get(self, instance_id: str) -> Registration | None:
        rows = self.db.execute("SELECT * FROM registrations WHERE instance_id=?", (instance_id,))
        return Registration(**dict(rows[0])) if rows else None

    def purge_expired(self, now: float) -> int:
        return self.db.execute_count("DELETE FROM registrations WHERE expires_at <= ?", (now,))


def _valid_url(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise ApiError(400, "'url' must be an http:// or https:// URL.", code="invalid_value", param="url")
    return url.rstrip("/")


class RegistrationService:
    """Keeps registered instances in the registry in step with the store."""

    def __init__(self, store: RegistrationStore, registry: InstanceRegistry, *, default_ttl: int, max_ttl: int,
                 check_interval: float = 1.0) -> None:
        self.store = store
        self.registry = registry
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.check_interval = check_interval
        self._task: asyncio.Task | None = None

    def restore(self) -> int:
        """Bring back the registrations that outlived a restart."""
        now = time.time()
        self.store.purge_expired(now)
        regs = self.store.active(now)
        for reg in regs:
            if reg.model in self.registry.catalogue.models and not self._is_static(reg.instance_id):
                self._apply(reg)
        return len(regs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="registration-expiry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _ttl(self, value: Any) -> int:
        if value is None:
            return self.default_ttl
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.max_ttl:
            raise ApiError(400, f"'ttl_seconds' must be an integer from 1 to {self.max_ttl}.",
                           code="invalid_value", param="ttl_seconds")
        return value

    def _is_static(self, instance_id: str) -> bool:
        existing = self.registry.get(instance_id)
        return existing is not None and existing.source == "static"

    def register(self, payload: Any) -> Instance:
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        model, instance_id = payload.get("model"), payload.get("instance_id")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required.", code="invalid_value", param="model")
        if not isinstance(instance_id, str) or not instance_id or len(instance_id) > 200:
            raise ApiError(400, "'instance_id' must be a non-empty string.", code="invalid_value",
                           param="instance_id")
        url = _valid_url(payload.get("url"))
        ttl = self._ttl(payload.get("ttl_seconds"))
        if model not in self.registry.catalogue.models:
            raise model_not_found(model)
        if self._is_static(instance_id):
            raise ApiError(409, f"'{instance_id}' is a static instance of this gateway.", code="instance_id_taken",
                           param="instance_id")
        now = time.time()
        reg = Registration(instance_id, model, url, ttl, now, now + ttl)
        self.store.upsert(reg)
        instance = self._apply(reg)
        log.info("registered %s (%s) at %s for %ds", instance_id, model, url, ttl)
        return instance

    def heartbeat(self, instance_id: str, payload: Any) -> Instance:
        ttl_value = payload.get("ttl_seconds") if isinstance(payload, dict) else None
        instance = self.registry.get(instance_id)
        if instance is None or instance.source != "registered" or instance.state is InstanceState.GONE:
            raise ApiError(404, f"No registered instance '{instance_id}'; register again.",
                           code="instance_not_found")
        ttl = self._ttl(ttl_value) if ttl_value is not None else (self._stored_ttl(instance_id) or self.default_ttl)
        now = time.time()
        if not self.store.renew(instance_id, ttl, now):
            self.store.upsert(Registration(instance_id, instance.model, instance.url, ttl,
                                           instance.registered_at or now, now + ttl))
        instance.expires_at = now + ttl
        return instance

    def _stored_ttl(self, instance_id: str) -> int | None:
        reg = self.store.get(instance_id)
        return reg.ttl_seconds if reg else None

    def deregister(self, instance_id: str) -> Instance:
        instance = self.registry.get(instance_id)
        removed = self.store.delete(instance_id)
        if instance is None or instance.source != "registered" or (instance.state is InstanceState.GONE and not removed):
            raise ApiError(404, f"No registered instance '{instance_id}'.", code="instance_not_found")
        self._gone(instance, "deregistered")
        return instance

    def expire(self, now: float | None = None) -> list[Instance]:
        now = time.time() if now is None else now
        expired = [inst for inst in self.registry.all() if inst.source == "registered"
                   and inst.state is not InstanceState.GONE and inst.expires_at is not None and inst.expires_at <= now]
        for inst in expired:
            self.store.delete(inst.instance_id)
            self._gone(inst, "registration expired")
        return expired

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                self.expire()
            except Exception:
                log.exception("expiring registrations failed")

    def _gone(self, instance: Instance, why: str) -> None:
        instance.last_error = why
        instance.set_state(InstanceState.GONE)
        log.info("instance %s (%s): gone (%s)", instance.instance_id, instance.model, why)

    def _apply(self, reg: Registration) -> Instance:
        instance = self.registry.get(reg.instance_id)
        if instance is None or instance.url != reg.url or instance.model != reg.model:
            # A new object: requests in flight on the old URL still count down on the old one.
            instance = Instance(instance_id=reg.instance_id, model=reg.model, url=reg.url, source="registered")
            self.registry.add(instance)
        elif instance.state is InstanceState.GONE:
            instance.set_state(InstanceState.LOADING)
            instance.last_error = None
        instance.registered_at = reg.registered_at
        instance.expires_at = reg.expires_at
        return instance
