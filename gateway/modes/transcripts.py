"""Where sessions are kept, so a link can open them again: the gateway's store.

`TranscriptRepository` is the only thing that knows how transcripts are stored: one row of
`mode_transcripts` (gateway/store/schema.py) per session with its mode, status, times and the
transcript as JSON. It is written when a session starts and again when it ends (done,
stopped, timed out or failed), so a session the client abandoned is still there, `stopped`.
A session whose gateway was killed never ends: a row still `running` after `max_running`
seconds (more than a session may take, on any gateway) is marked `interrupted` when read or
pruned. `prune()` (run by the gateway's pruning job) forgets finished sessions older than the
catalogue's `arena.transcript_retention_days`; a live session's row is never pruned.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.modes.session import Transcript
from gateway.store import Database
from gateway.store.schema import mode_transcripts


class TranscriptRepository:
    def __init__(self, db: Database, *, retention_days: float = 0, max_running: float = float("inf"),
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.retention_days = retention_days
        self.max_running = max_running
        self.clock = clock

    async def save(self, transcript: Transcript) -> None:
        values = {"id": transcript.id, "mode": transcript.mode, "status": transcript.status,
                  "created_at": transcript.created, "finished_at": transcript.finished,
                  "body": json.dumps(transcript.to_dict(), ensure_ascii=False)}
        dialect = postgresql if not self.db.is_sqlite else sqlite
        statement = dialect.insert(mode_transcripts).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[mode_transcripts.c.id],
            set_={k: statement.excluded[k] for k in ("status", "finished_at", "body")})
        async with self.db.write() as conn:
            await conn.execute(statement)

    async def get(self, transcript_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(mode_transcripts.c.body, mode_transcripts.c.status,
                                             mode_transcripts.c.created_at)
                                      .where(mode_transcripts.c.id == transcript_id))).first()
        if row is None:
            return None
        if row.status == "running" and row.created_at < self._running_since(self.clock()):
            await self.mark_interrupted(transcript_id)
            return await self.get(transcript_id)
        return json.loads(row.body)

    def _running_since(self, now: float) -> float:
        """A row still `running` that started before this has no gateway left."""
        return now - self.max_running

    async def mark_interrupted(self, transcript_id: str | None = None) -> int:
        """Mark `interrupted` the rows still `running` (one, or all) that started more than
        `max_running` seconds ago: their gateway died (a live session ends well before)."""
        now = self.clock()
        where = [mode_transcripts.c.status == "running", mode_transcripts.c.created_at < self._running_since(now)]
        if transcript_id is not None:
            where.append(mode_transcripts.c.id == transcript_id)
        async with self.db.write() as conn:
            rows = (await conn.execute(select(mode_transcripts.c.id, mode_transcripts.c.body).where(*where))).all()
            for row in rows:
                body = json.loads(row.body)
                body["status"], body["finished"] = "interrupted", now
                await conn.execute(update(mode_transcripts).where(
                    mode_transcripts.c.id == row.id, mode_transcripts.c.status == "running").values(
                    status="interrupted", finished_at=now, body=json.dumps(body, ensure_ascii=False)))
        return len(rows)

    async def prune(self) -> int:
        """Forget finished sessions that started more than `retention_days` ago (0: keep all),
        the interrupted ones too (marked here first)."""
        await self.mark_interrupted()
        if self.retention_days <= 0:
            return 0
        cutoff = self.clock() - self.retention_days * 86400
        async with self.db.write() as conn:
            return (await conn.execute(delete(mode_transcripts).where(
                mode_transcripts.c.created_at < cutoff, mode_transcripts.c.finished_at.is_not(None)))).rowcount
