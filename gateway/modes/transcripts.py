"""Where finished (and running) sessions are kept, so a link can open them again.

`TranscriptRepository` is the only thing that knows how transcripts are stored: one row per
session with its mode, status, times and the transcript as JSON. It is written when a session
starts and again when it ends (done, stopped, timed out or failed), so a session the client
abandoned is still there, marked `stopped`.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.db import SqliteDatabase
from gateway.modes.session import Transcript

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mode_transcripts (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mode_transcripts_created ON mode_transcripts (created);
"""


class TranscriptRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.script(_SCHEMA)

    def save(self, transcript: Transcript) -> None:
        self.db.execute(
            "INSERT INTO mode_transcripts (id, mode, status, created, finished, body) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET status = excluded.status, finished = excluded.finished, body = excluded.body",
            (transcript.id, transcript.mode, transcript.status, transcript.created, transcript.finished,
             json.dumps(transcript.to_dict(), ensure_ascii=False)))

    def get(self, transcript_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("SELECT body FROM mode_transcripts WHERE id = ?", (transcript_id,))
        return json.loads(rows[0]["body"]) if rows else None

    def close(self) -> None:
        self.db.close()
