"""A gateway killed (SIGKILL) mid-session: the session's transcript, left "running", is marked
interrupted once older than any session may run (twice the session time limit), and then
pruned like a finished one."""

from __future__ import annotations

import httpx

from tests.modes.conftest import GEMMA, SMOL, gateway_env, sse_events, wait_modes_ready, wait_until

SESSION_TIMEOUT = 10  # seconds: a row still running after 20 s has no gateway left
RETENTION_DAYS = 30 / 86400  # 30 s, so the pruning shows within the test


def test_a_session_cut_off_by_a_kill_is_marked_interrupted_then_pruned(fleet, tmp_path, gateways):
    urls = {m: s.url for m, s in fleet["services"].items()}
    env = gateway_env(tmp_path, urls, ARENA_MODES_SESSION_TIMEOUT=str(SESSION_TIMEOUT),
                      ARENA_GATEWAY_PRUNE_INTERVAL="1", ARENA_ARENA__TRANSCRIPT_RETENTION_DAYS=str(RETENTION_DAYS))
    first = wait_modes_ready(gateways(env), urls)
    body = {"question": "Write a long story about a lighthouse.", "participants": [SMOL, GEMMA],
            "max_tokens": 400, "temperature": 0}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{first.url}/api/modes/council", json=body) as response:
            assert response.status_code == 200, response.read()
            session = response.headers["x-arena-session"]
            events = sse_events(response)
            for event in events:
                if event["type"] == "token":
                    first.kill()  # mid-answer
                    break
            assert not first.running, "the session ended before its first token"
            events.close()

        second = wait_modes_ready(gateways(env), urls)
        url = f"{second.url}/api/modes/transcripts/{session}"

        def status() -> str | None:
            response = client.get(url)
            return response.json()["status"] if response.status_code == 200 else None

        assert status() in ("running", "interrupted")  # kept: its gateway may still be running it
        wait_until(lambda: status() == "interrupted", 4 * SESSION_TIMEOUT, 0.2, what="the transcript interrupted")
        transcript = client.get(url).json()  # as saved at its start (a session is saved at start and end)
        assert transcript["finished"] is not None, transcript
        wait_until(lambda: client.get(url).status_code == 404, 60, 0.5, what="the interrupted transcript pruned")
