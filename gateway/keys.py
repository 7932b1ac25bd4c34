"""API keys (stored as SHA-256 hashes, never in clear) and their per-minute request limits."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gateway.db import SqliteDatabase

KEY_PREFIX = "sk-arena-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    rpm INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


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


class ApiKeyStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.script(_SCHEMA)

    def create(self, name: str, rpm: int | None = None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        now = time.time()
        self.db.execute("INSERT INTO api_keys (key_id, name, key_hash, prefix, rpm, created_at) VALUES (?,?,?,?,?,?)",
                        (key_id, name, hash_key(secret), secret[:len(KEY_PREFIX) + 4], rpm, now))
        return ApiKey(key_id, name, secret[:len(KEY_PREFIX) + 4], rpm, now, None), secret

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        rows = self.db.execute("SELECT * FROM api_keys ORDER BY created_at")
        keys = [self._row(row) for row in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def revoke(self, key_id: str) -> bool:
        return self.db.execute_count("UPDATE api_keys SET revoked_at=? WHERE key_id=? AND revoked_at IS NULL",
                                     (time.time(), key_id)) > 0

    def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        digest = hash_key(secret)
        rows = self.db.execute("SELECT * FROM api_keys WHERE key_hash=?", (digest,))
        if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest):
            return None
        key = self._row(rows[0])
        return key if key.revoked_at is None else None

    @staticmethod
    def _row(row: Any) -> ApiKey:
        return ApiKey(row["key_id"], row["name"], row["prefix"], row["rpm"], row["created_at"], row["revoked_at"])


class RateLimiter:
    """Requests per minute per key, over a sliding 60-second window."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str, rpm: int, now: float | None = None) -> float | None:
        """Count one request; None if allowed, else seconds until one would be."""
        if rpm <= 0:
            return None
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.WINDOW:
            hits.popleft()
        if len(hits) >= rpm:
            return max(0.0, self.WINDOW - (now - hits[0]))
        hits.append(now)
        return None

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
