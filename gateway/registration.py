"""Instances that register themselves: kept in the store, so they survive a gateway restart
and every gateway sharing the store routes to them.

A registration lives `ttl_seconds` past its last heartbeat. Registering needs the registration
token and returns a per-registration secret; heartbeats, deregistration and re-registration of
a live id need that secret too (`X-Arena-Registration-Secret`), so a holder of the token cannot
take over or remove another runner's instance, and a runner handing off to its successor
(maybe at the same public URL) can only ever remove itself. A registered URL is an origin
(http or https, no userinfo, path, query or fragment) on an allowed host (`UrlPolicy`), and
each model has at most `max_per_model` live registrations. Each gateway brings its registry in step with the store every
`sync_interval` seconds (`RegistrationService.sync`): an instance registered through another
gateway becomes routable here, one deregistered elsewhere is gone here. Health stays per
gateway: each probes its instances itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update

from gateway.instances import Instance, InstanceRegistry, InstanceState
from gateway.store import Database
from gateway.store.periodic import Periodic
from gateway.store.schema import registrations
from shared.errors import ApiError, model_not_found

log = logging.getLogger("gateway.registration")

REGISTRATION_SECRET_HEADER = "X-Arena-Registration-Secret"


@dataclass(frozen=True)
class Registration:
    instance_id: str
    model: str
    url: str
    ttl_seconds: int
    registered_at: float
    expires_at: float
    secret_hash: str | None = None
    drain_requested_at: float | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RegistrationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, reg: Registration) -> None:
        values = reg.__dict__
        async with self.db.write() as conn:
            changed = await conn.execute(update(registrations).where(registrations.c.instance_id == reg.instance_id)
                                         .values(**values))
            if changed.rowcount == 0:
                await conn.execute(registrations.insert().values(**values))

    async def renew(self, instance_id: str, ttl_seconds: int, now: float) -> Registration | None:
        """Extend a live registration; None if there is none (deregistered or expired)."""
        async with self.db.write() as conn:
            changed = await conn.execute(update(registrations).where(
                registrations.c.instance_id == instance_id, registrations.c.expires_at > now)
                .values(ttl_seconds=ttl_seconds, expires_at=now + ttl_seconds))
            if changed.rowcount == 0:
                return None
            row = (await conn.execute(select(registrations).where(
                registrations.c.instance_id == instance_id))).one()
        return Registration(**row._asdict())

    async def request_drain(self, instance_id: str, now: float) -> bool:
        """Mark a live registration as asked to drain; False when there is none."""
        async with self.db.write() as conn:
            changed = await conn.execute(update(registrations).where(
                registrations.c.instance_id == instance_id, registrations.c.expires_at > now)
                .values(drain_requested_at=now))
            return changed.rowcount > 0

    async def delete(self, instance_id: str) -> bool:
        async with self.db.write() as conn:
            return (await conn.execute(delete(registrations).where(
                registrations.c.instance_id == instance_id))).rowcount > 0

    async def active(self, now: float) -> list[Registration]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(registrations).where(registrations.c.expires_at > now))).all()
        return [Registration(**row._asdict()) for row in rows]

    async def get(self, instance_id: str) -> Registration | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(registrations).where(
                registrations.c.instance_id == instance_id))).first()
        return Registration(**row._asdict()) if row else None

    async def count_live(self, model: str, now: float, *, besides: str) -> int:
        async with self.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(registrations).where(
                registrations.c.model == model, registrations.c.expires_at > now,
                registrations.c.instance_id != besides))).scalar_one()

    async def purge_expired(self, now: float) -> int:
        async with self.db.write() as conn:
            return (await conn.execute(delete(registrations).where(registrations.c.expires_at <= now))).rowcount


class UrlPolicy:
    """Which URLs an instance may register: an http(s) origin on a host matching a pattern.

    Patterns are fnmatch patterns on the host name (``*.example.org``); ``loopback`` stands for
    127.0.0.0/8, ::1 and localhost. The URL may not carry userinfo, a path, a query or a fragment:
    the gateway appends the API's paths itself and sends the instance secret there.
    """

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p.strip().lower() for p in patterns if p.strip()]

    def check(self, url: Any) -> str:
        if not isinstance(url, str) or len(url) > 2048:
            raise self._refuse("'url' must be an http:// or https:// URL.")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise self._refuse("'url' is not a valid URL.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._refuse("'url' must be an http:// or https:// URL.")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise self._refuse("'url' may not carry a user name or password.")
        if parts.query or parts.fragment or "?" in url or "#" in url or parts.path not in ("", "/"):
            raise self._refuse("'url' must be the instance's origin (scheme, host, port): no path, query or "
                               "fragment.")
        host = parts.hostname.lower()
        if not self.allows(host):
            raise ApiError(403, f"'url' names the host {host!r}, which this gateway does not accept for "
                                "registrations (ARENA_GATEWAY_REGISTRATION_HOSTS).", code="host_not_allowed",
                           param="url")
        netloc = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")

    def allows(self, host: str) -> bool:
        for pattern in self.patterns:
            if pattern == "loopback":
                if host == "localhost" or _is_loopback(host):
                    return True
            elif fnmatch.fnmatchcase(host, pattern):
                return True
        return False

    @staticmethod
    def _refuse(message: str) -> ApiError:
        return ApiError(400, message, code="invalid_value", param="url")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistrationService:
    """Keeps registered instances in the registry in step with the store."""

    def __init__(self, store: RegistrationStore, registry: InstanceRegistry, *, default_ttl: int, max_ttl: int,
                 url_policy: UrlPolicy, max_per_model: int = 8, sync_interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.url_policy = url_policy
        self.max_per_model = max_per_model
        self.registry = registry
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.sync_interval = sync_interval
        self.clock = clock
        self._sync = Periodic("registration sync", sync_interval, self._sync_once)
        self._written: dict[str, float] = {}  # instance id -> when this gateway last wrote it

    async def restore(self) -> int:
        """Bring back the registrations that outlived a restart."""
        await self.store.purge_expired(self.clock())
        return await self.sync()

    async def sync(self) -> int:
        """Make the registry match the store's live registrations; the number of them."""
        now = self.clock()
        regs = await self.store.active(now)
        live = set()
        for reg in regs:
            if reg.model in self.registry.catalogue.models and not self._is_static(reg.instance_id):
                self._apply(reg)
                live.add(reg.instance_id)
        for inst in self.registry.all():
            if self._written.get(inst.instance_id, float("-inf")) >= now:
                continue  # written here after this sync read the store
            if inst.source == "registered" and inst.state is not InstanceState.GONE and inst.instance_id not in live:
                self._gone(inst, "registration expired" if inst.expires_at is not None and inst.expires_at <= now
                           else "deregistered")
        return len(regs)

    async def start(self) -> None:
        self._sync.start()

    async def stop(self) -> None:
        await self._sync.stop()

    def _ttl(self, value: Any) -> int:
        if value is None:
            return self.default_ttl
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.max_ttl:
            raise ApiError(400, f"'ttl_seconds' must be an integer from 1 to {self.max_ttl}.",
                           code="invalid_value", param="ttl_seconds")
        return value

    def _is_static(self, instance_id: str) -> bool:
        existing = self.registry.get(instance_id)
        return existing is not None and existing.source in ("static", "local")

    async def register(self, payload: Any, secret: str | None = None) -> tuple[Instance, str | None]:
        """Register (or move) an instance; with the new registration's secret (None if it kept its own)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        model, instance_id = payload.get("model"), payload.get("instance_id")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required.", code="invalid_value", param="model")
        if not isinstance(instance_id, str) or not instance_id or len(instance_id) > 200:
            raise ApiError(400, "'instance_id' must be a non-empty string.", code="invalid_value",
                           param="instance_id")
        url = self.url_policy.check(payload.get("url"))
        ttl = self._ttl(payload.get("ttl_seconds"))
        if model not in self.registry.catalogue.models:
            raise model_not_found(model)
        if self._is_static(instance_id):
            raise ApiError(409, f"'{instance_id}' is a static instance of this gateway.", code="instance_id_taken",
                           param="instance_id")
        now = self._written[instance_id] = self.clock()
        existing = await self.store.get(instance_id)
        live = existing if existing is not None and existing.expires_at > now and existing.secret_hash else None
        if live is not None and not _secret_matches(live, secret):
            raise ApiError(409, f"'{instance_id}' is registered with another credential: send its "
                                f"{REGISTRATION_SECRET_HEADER}, or use another instance id.",
                           code="instance_id_taken", param="instance_id")
        if await self.store.count_live(model, now, besides=instance_id) >= self.max_per_model:
            raise ApiError(409, f"'{model}' already has {self.max_per_model} registered instances, the most this "
                                "gateway accepts.", code="registration_limit_reached", param="model")
        new_secret = None if live is not None else "rs-" + secrets.token_urlsafe(32)
        secret_hash = live.secret_hash if live is not None else _hash(new_secret)
        reg = Registration(instance_id, model, url, ttl, now, now + ttl, secret_hash)
        await self.store.upsert(reg)
        instance = self._apply(reg)
        log.info("registered %s (%s) at %s for %ds", instance_id, model, url, ttl)
        return instance, new_secret

    async def _bound(self, instance_id: str, secret: str | None) -> Registration:
        """The live registration of `instance_id`, if `secret` is its own; 404 or 403 otherwise."""
        stored = await self.store.get(instance_id)
        if stored is None or stored.expires_at <= self.clock() or not stored.secret_hash \
                or self._is_static(instance_id):
            instance = self.registry.get(instance_id)
            if instance is not None and instance.source == "registered" and instance.state is not InstanceState.GONE:
                self._gone(instance, "registration expired")
            raise ApiError(404, f"No registered instance '{instance_id}'; register again.",
                           code="instance_not_found")
        if not _secret_matches(stored, secret):
            raise ApiError(403, f"Send the {REGISTRATION_SECRET_HEADER} that registering '{instance_id}' returned.",
                           code="invalid_registration_secret")
        return stored

    async def heartbeat(self, instance_id: str, payload: Any, secret: str | None = None) -> Instance:
        ttl_value = payload.get("ttl_seconds") if isinstance(payload, dict) else None
        ttl = self._ttl(ttl_value) if ttl_value is not None else None
        stored = await self._bound(instance_id, secret)
        now = self._written[instance_id] = self.clock()
        reg = await self.store.renew(instance_id, ttl or stored.ttl_seconds, now)
        if reg is None or reg.model not in self.registry.catalogue.models:
            raise ApiError(404, f"No registered instance '{instance_id}'; register again.",
                           code="instance_not_found")
        instance = self._apply(reg)
        if reg.drain_requested_at is not None and instance.drain_heard_at is None:
            instance.drain_heard_at = now  # this answer tells its runner to drain
        return instance

    async def request_drain(self, instance_id: str) -> bool:
        """Ask one registered instance to drain: out of routing at once on every gateway sharing
        the store, and its runner is told at its next heartbeat (`"drain": true`), deregisters,
        lets its service finish and ends without a successor. False when it is not registered."""
        if not await self.store.request_drain(instance_id, self.clock()):
            return False
        stored = await self.store.get(instance_id)
        if stored is not None:
            self._apply(stored)
        log.info("instance %s asked to drain", instance_id)
        return True

    async def deregister(self, instance_id: str, secret: str | None = None) -> Instance:
        stored = await self._bound(instance_id, secret)
        await self.store.delete(instance_id)
        # Registered through another gateway and not yet synced here: known from the store.
        instance = self.registry.get(instance_id) or self._apply(stored)
        self._gone(instance, "deregistered")
        return instance

    def expire(self, now: float | None = None) -> list[Instance]:
        """Mark registrations past their expiry gone (in memory: works while the store is down)."""
        now = self.clock() if now is None else now
        expired = [inst for inst in self.registry.all() if inst.source == "registered"
                   and inst.state is not InstanceState.GONE and inst.expires_at is not None and inst.expires_at <= now]
        for inst in expired:
            self._gone(inst, "registration expired")
        return expired

    async def _sync_once(self) -> None:
        self.expire()
        await self.sync()
        cutoff = self.clock() - 60
        self._written = {k: t for k, t in self._written.items() if t > cutoff}

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
        instance.drain_requested_at = reg.drain_requested_at
        if reg.drain_requested_at is not None and not instance.retiring:
            instance.retiring = True
            instance.set_state(InstanceState.DRAINING)
        return instance


def _secret_matches(reg: Registration, secret: str | None) -> bool:
    return bool(secret) and reg.secret_hash is not None and hmac.compare_digest(reg.secret_hash, _hash(secret))
