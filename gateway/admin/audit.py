"""The admin audit log: who (a fingerprint of the admin key, never the key), what, when."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import delete, insert, select

from gateway.store import Database
from gateway.store.schema import admin_audit

MAX_DETAIL_CHARS = 4000


def fingerprint(secret: str) -> str:
    """A short, stable name for a key that does not reveal it: ``key:`` + 12 hex of its SHA-256."""
    return "key:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action,
                "target": self.target, "detail": self.detail}


class AuditLog:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def record(self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)
        if len(text) > MAX_DETAIL_CHARS:
            text = json.dumps({"truncated": text[:MAX_DETAIL_CHARS]})
        async with self.db.write() as conn:
            await conn.execute(insert(admin_audit).values(at=self.clock(), actor=actor, action=action,
                                                          target=target, detail=text))

    async def recent(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        query = select(admin_audit).order_by(admin_audit.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(admin_audit.c.id < before_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, json.loads(r.detail)) for r in rows]

    async def prune(self, before: float) -> int:
        async with self.db.write() as conn:
            return (await conn.execute(delete(admin_audit).where(admin_audit.c.at < before))).rowcount
