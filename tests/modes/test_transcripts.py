"""Transcripts in the gateway's store, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from gateway.modes.session import Transcript
from gateway.modes.transcripts import TranscriptRepository


async def test_a_transcript_is_saved_updated_and_read_back(database):
    repository = TranscriptRepository(database)
    transcript = Transcript(id="abcdefgh1234", mode="council", question="Why is the sky blue? ☀",
                            settings={"rounds": 1}, participants=[{"id": "p1", "model": "m", "name": "M"}],
                            orchestrator=None)
    await repository.save(transcript)
    assert (await repository.get(transcript.id))["status"] == "running"
    transcript.events.append({"type": "turn_end", "text": "Rayleigh scattering."})
    transcript.status, transcript.finished = "done", transcript.created + 3
    await repository.save(transcript)  # the same row, updated
    stored = await repository.get(transcript.id)
    assert stored == transcript.to_dict()
    assert await repository.get("missing-id") is None
