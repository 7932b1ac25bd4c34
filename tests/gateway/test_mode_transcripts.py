"""Stored mode sessions in a gateway: pruned past the catalogue's retention by the gateway's
pruning job, and readable by their id without an API key (the permalink is the capability)."""

from __future__ import annotations

import asyncio
import time

from gateway.modes.session import Transcript
from gateway.modes.transcripts import TranscriptRepository
from gateway.store import Database
from gateway.store.database import sqlite_url
from tests.gateway.conftest import CATALOGUE
from tests.harness import assert_openai_error


def store(tmp_path, *transcripts: Transcript) -> None:
    async def save() -> None:
        db = Database(sqlite_url(tmp_path / "gateway.sqlite3"))  # the file gateway_apps' gateway uses
        await db.upgrade()
        try:
            for transcript in transcripts:
                await TranscriptRepository(db).save(transcript)
        finally:
            await db.dispose()

    asyncio.run(save())


def transcript(id_: str, age_days: float) -> Transcript:
    started = time.time() - age_days * 86400
    return Transcript(id=id_, mode="council", question="q", settings={}, participants=[], orchestrator=None,
                      created=started, finished=started + 5, status="done")


def test_the_pruning_job_forgets_transcripts_past_their_retention(tmp_path, gateway_apps):
    days = CATALOGUE.arena.transcript_retention_days
    assert days > 0
    store(tmp_path, transcript("expired-00001", days + 1), transcript("kept-0000001", days - 1))
    gateway = gateway_apps()  # the job runs once as the gateway starts
    assert gateway.get("/api/modes/transcripts/expired-00001").status_code == 404
    assert gateway.get("/api/modes/transcripts/kept-0000001").json()["id"] == "kept-0000001"


def test_a_stored_session_is_read_without_a_key_while_running_one_needs_it(tmp_path, gateway_apps):
    store(tmp_path, transcript("shared-000001", 0))
    gateway = gateway_apps(require_api_key=True)
    assert gateway.get("/api/modes/transcripts/shared-000001").json()["id"] == "shared-000001"
    download = gateway.get("/api/modes/transcripts/shared-000001?download=1")
    assert download.headers["content-disposition"].startswith("attachment")
    assert_openai_error(gateway.post("/api/modes/council", json={"question": "q", "participants": ["a", "b"]}), 401,
                        "missing_api_key")
    assert_openai_error(gateway.get("/api/modes/options"), 401, "missing_api_key")
