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


async def test_finished_transcripts_older_than_the_retention_are_pruned(database):
    """Finished rows go after the retention; a row still running after `max_running` was cut off
    by a killed gateway: it is marked interrupted and then pruned like a finished one. A live
    session's running row (younger than `max_running`) is kept, whatever its age."""
    now = [1_000_000.0]
    repository = TranscriptRepository(database, retention_days=2, max_running=1200, clock=lambda: now[0])

    def transcript(id_: str, created: float, finished: float | None) -> Transcript:
        t = Transcript(id=id_, mode="roundtable", question="q", settings={}, participants=[], orchestrator=None)
        t.created, t.finished, t.status = created, finished, "done" if finished else "running"
        return t

    day = 86400.0
    await repository.save(transcript("old-done-0001", now[0] - 3 * day, now[0] - 3 * day + 5))
    await repository.save(transcript("old-running-01", now[0] - 3 * day, None))  # its gateway died
    await repository.save(transcript("live-running-1", now[0] - 600, None))  # running now: kept
    await repository.save(transcript("recent-done-01", now[0] - day, now[0] - day + 5))
    assert await repository.prune() == 2
    assert await repository.get("old-done-0001") is None
    assert await repository.get("old-running-01") is None
    assert (await repository.get("live-running-1"))["status"] == "running"
    assert await repository.get("recent-done-01") is not None
    now[0] += 1.5 * day
    # The live session's gateway died too: read after max_running, its row says so, then it is pruned.
    assert (await repository.get("live-running-1"))["status"] == "interrupted"
    assert await repository.prune() == 1
    assert await repository.get("recent-done-01") is None
    assert (await repository.get("live-running-1"))["finished"] == now[0]
    now[0] += 2 * day
    assert await repository.prune() == 1 and await repository.get("live-running-1") is None
    assert await TranscriptRepository(database, retention_days=0).prune() == 0  # 0: kept for ever
