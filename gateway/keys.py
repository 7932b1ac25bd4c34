"""API keys (stored as SHA-256 hashes, never in clear) and their per-minute request limits.

`ApiKeyStore` is the keys' repository in the gateway's store. `KeyCache` holds the active keys
in memory, refreshed from the store every few seconds, so checking a key on `/v1` does no I/O
(a key revoked through any gateway is refused by every gateway within one refresh).
`RateLimiter` counts requests per key in the store, so every gateway sharing it enforces one
limit together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import delete, insert, select, update

from gateway.store import Database
from gateway.store.schema import api_keys, rate_windows

log = logging.getLogger("gateway.keys")

KEY_PREFIX = "sk-arena-"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    prefix: str
    rpm: int | None
    created_at: float
    revoked_at: float | None

    def public(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "prefix": self.prefix, "rpm": self.rpm,
                "created_at": self.created_at, "revoked_at": self.revoked_at,
                "active": self.revoked_at is None}


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: Any) -> ApiKey:
    return ApiKey(row.key_id, row.name, row.prefix, row.rpm, row.created_at, row.revoked_at)


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, rpm: int | None = None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey("key_" + secrets.token_hex(6), name, secret[:len(KEY_PREFIX) + 4], rpm, time.time(), None)
        async with self.db.write() as conn:
            await conn.execute(insert(api_keys).values(key_hash=hash_key(secret), **key.__dict__))
        return key, secret

    async def list(self, include_revoked: bool = True) -> list[ApiKey]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        keys = [_key(row) for row in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    async def active_by_hash(self) -> dict[str, ApiKey]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None)))).all()
        return {row.key_hash: _key(row) for row in rows}

    async def revoke(self, key_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(update(api_keys).where(api_keys.c.key_id == key_id,
                                                               api_keys.c.revoked_at.is_(None))
                                        .values(revoked_at=time.time()))
        return result.rowcount > 0

    async def set_limit(self, key_id: str, rpm: int | None) -> ApiKey | None:
        """Set an active key's requests per minute (None: the gateway's default); None if no such key."""
        async with self.db.write() as conn:
            result = await conn.execute(update(api_keys).where(api_keys.c.key_id == key_id,
                                                               api_keys.c.revoked_at.is_(None)).values(rpm=rpm))
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).one()
        return _key(row)

    async def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None (reads the store: for tools, not the hot path)."""
        return (await self.active_by_hash()).get(hash_key(secret))


class KeyCache:
    """The active keys by hash, in memory; `refresh()` reloads them from the store.

    A lookup never waits for the store. An unknown key may be one created a moment ago through
    another gateway or `arena keys create`: `refresh_after_miss()` reloads the keys from a read
    that starts after the miss, but never more often than every `miss_refresh` seconds (misses
    in between share one reload), so unknown keys cannot load the database.
    """

    def __init__(self, store: ApiKeyStore, *, miss_refresh: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.miss_refresh = miss_refresh
        self.clock = clock
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_at = float("-inf")  # when the last load started
        self._lock = asyncio.Lock()

    def get(self, secret: str) -> ApiKey | None:
        return self._by_hash.get(hash_key(secret))

    def forget(self, key_id: str) -> None:
        self._by_hash = {h: k for h, k in self._by_hash.items() if k.key_id != key_id}

    async def _load(self) -> None:
        started = self.clock()
        self._by_hash = await self.store.active_by_hash()
        self._loaded_at = started

    async def refresh(self) -> None:
        async with self._lock:
            await self._load()

    async def refresh_after_miss(self) -> None:
        missed_at = self.clock()
        async with self._lock:
            if self._loaded_at >= missed_at:
                return  # a load that started after the miss has just finished
            spacing = self._loaded_at + self.miss_refresh - self.clock()
            if spacing > 0:
                await asyncio.sleep(spacing)
            await self._load()


class RateLimiter:
    """Requests per minute per key, counted in the store so that every gateway shares them.

    A sliding window estimated from two fixed one-minute windows (the current one, and the
    previous one weighted by how much of it still lies within the last 60 seconds): one
    atomic upsert per request. A request over the limit is not counted.
    """

    WINDOW = 60

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def check(self, key: str, rpm: int) -> float | None:
        """Count one request; None if allowed, else seconds until one would be."""
        if rpm <= 0:
            return None
        now = self.clock()
        window = int(now // self.WINDOW)
        elapsed = now - window * self.WINDOW
        dialect = self.db.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        stmt = upsert(rate_windows).values(key_id=key, window=window, hits=1)
        stmt = stmt.on_conflict_do_update(index_elements=["key_id", "window"],
                                          set_={"hits": rate_windows.c.hits + 1}).returning(rate_windows.c.hits)
        async with self.db.write() as conn:
            hits = (await conn.execute(stmt)).scalar_one()
            previous = (await conn.execute(select(rate_windows.c.hits).where(
                rate_windows.c.key_id == key, rate_windows.c.window == window - 1))).scalar() or 0
            weight = 1 - elapsed / self.WINDOW
            if previous * weight + hits <= rpm:
                return None
            await conn.execute(update(rate_windows).where(rate_windows.c.key_id == key, rate_windows.c.window == window)
                               .values(hits=rate_windows.c.hits - 1))
        return self._wait(hits, previous, elapsed, rpm)

    async def peek(self, key: str, rpm: int) -> float | None:
        """Would one more request of `key` be refused? None if not, else seconds until it would
        not be. Counts nothing (a read only)."""
        if rpm <= 0:
            return None
        now = self.clock()
        window = int(now // self.WINDOW)
        elapsed = now - window * self.WINDOW
        async with self.db.read() as conn:
            rows = dict((await conn.execute(select(rate_windows.c.window, rate_windows.c.hits).where(
                rate_windows.c.key_id == key, rate_windows.c.window.in_([window, window - 1])))).all())
        hits, previous = rows.get(window, 0) + 1, rows.get(window - 1, 0)
        if previous * (1 - elapsed / self.WINDOW) + hits <= rpm:
            return None
        return self._wait(hits, previous, elapsed, rpm)

    def _wait(self, hits: int, previous: int, elapsed: float, rpm: int) -> float:
        """Over the limit: wait until enough of the previous window has slid out (or the next window)."""
        until_next = self.WINDOW - elapsed
        if previous and hits - 1 < rpm:
            return max(0.5, min(until_next, (1 - (rpm - hits) / previous) * self.WINDOW - elapsed))
        return max(0.5, until_next)

    async def prune(self) -> int:
        """Forget windows older than the previous one."""
        window = int(self.clock() // self.WINDOW)
        async with self.db.write() as conn:
            return (await conn.execute(delete(rate_windows).where(rate_windows.c.window < window - 1))).rowcount

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
