"""The modes when things go wrong: a participant killed mid-answer, a client that leaves, an
orchestrator that answers garbage, and the external orchestrator's token, which must reach
that endpoint and nothing else."""

from __future__ import annotations

import json

import httpx

from gateway.modes.session import MAX_CHARS_PER_TOKEN
from tests.harness import start_service
from tests.modes.conftest import (EXTERNAL_MODEL, EXTERNAL_TOKEN, GEMMA, SMOL, of_type, run_mode, slots_active,
                                  sse_events, start_modes_gateway, wait_until)


def test_participant_killed_mid_answer_is_skipped_and_the_council_finishes(fleet, tmp_path):
    victim = start_service(GEMMA, env={"ARENA_FLEET__DATA_DIR": str(fleet["data"])}, timeout=300)
    gateway = None
    try:
        gateway = start_modes_gateway(tmp_path, {SMOL: fleet["services"][SMOL].url, GEMMA: victim.url})
        body = {"question": "Tell me a long story about a dragon and a knight.", "participants": [SMOL, GEMMA],
                "max_tokens": 32, "temperature": 0}
        events = []
        with httpx.stream("POST", f"{gateway.url}/api/modes/council", json=body, timeout=240) as response:
            assert response.status_code == 200
            for event in sse_events(response):
                events.append(event)
                if event["type"] == "token" and event["participant"] == "p2" and victim.process.poll() is None:
                    victim.process.kill()  # mid-answer: it has started to speak
    finally:
        victim.stop()
        if gateway:
            gateway.stop()
    assert any(e["type"] == "token" and e["participant"] == "p2" for e in events), "the victim had started"
    killed = of_type(events, "turn_end", participant="p2", role="answer")[0]
    assert killed["status"] == "skipped" and killed["error"]
    note = of_type(events, "error", participant="p2")[0]
    assert note["code"] == "turn_skipped" and "skipped" in note["message"]
    assert of_type(events, "turn_end", participant="p1", role="answer")[0]["status"] == "done"
    chair = of_type(events, "turn_start", role="synthesis")[0]
    assert chair["participant"] == "p1", "the survivor chairs"
    assert events[-1]["type"] == "done" and events[-1]["status"] == "done"


def test_client_that_disconnects_stops_every_generation(fleet):
    gateway, services = fleet["gateway"], fleet["services"]
    body = {"question": "Write a long essay about the history of the sea.", "participants": [SMOL, GEMMA, SMOL],
            "rounds": 2, "max_tokens": 400, "temperature": 0.7}
    speaking: set[str] = set()
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{gateway.url}/api/modes/roundtable", json=body) as response:
            session = response.headers["x-arena-session"]
            # Held in a name: a generator dropped after `break` is closed at once, and with it
            # the response, so the slots would be read after the client had already left.
            events = sse_events(response)
            for event in events:
                if event["type"] == "token":
                    speaking.add(event["participant"])
                if len(speaking) == 3:
                    break
            busy = {m: slots_active(s) for m, s in services.items()}
            # Both SmolLM2 participants are mid-essay; the base Gemma may already have stopped
            # at its transcript's stop string, so its slot is not required to be busy.
            assert busy[SMOL] >= 2, busy
        # The response is closed here: the client is gone.
    wait_until(lambda: all(slots_active(s) == 0 for s in services.values()), 10,
               what="every slot freed after the client left")
    stored = wait_until(lambda: (t := httpx.get(f"{gateway.url}/api/modes/transcripts/{session}").json())
                        ["status"] == "stopped" and t, 10, what="the session recorded as stopped")
    assert of_type(stored["events"], "turn_start", role="answer")


def test_external_orchestrator_with_garbage_falls_back_and_the_token_goes_only_there(external, fleet):
    gateway, fake = external["gateway"], external["fake"]
    # Garbage, and far longer than max_tokens allows: an endpoint may ignore max_tokens.
    fake.set_answer("<<not json>> }{ ranking: maybe?? " + "filler " * 400)
    before = len(fake.sent())
    raw = []
    body = {"question": "What is the capital of France?", "participants": [SMOL, GEMMA], "rounds": 2,
            "max_tokens": 6, "temperature": 0, "orchestrator": "external"}
    with httpx.stream("POST", f"{gateway.url}/api/modes/discussion", json=body, timeout=240) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            raw.append(chunk)
    text = b"".join(raw).decode()
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "done"
    plan = of_type(events, "evaluation", kind="plan")[0]
    assert plan["source"] == "fallback" and plan["weights"] == {"p1": 0.5, "p2": 0.5}
    judgement = of_type(events, "evaluation", kind="judgement")[0]
    assert judgement["source"] == "fallback" and judgement["complete"] is False
    assert of_type(events, "turn_start", role="contribution", round=2), "an unreadable judgement does not stop it"
    synthesis = of_type(events, "synthesis")[0]
    assert synthesis["participant"] == "orchestrator" and "not json" in synthesis["text"]
    assert len(synthesis["text"]) <= 6 * MAX_CHARS_PER_TOKEN, "cut at a multiple of max_tokens"

    sent = fake.sent()[before:]
    assert [s["body"].get("response_format", {}).get("type") for s in sent] == ["json_schema", "json_schema", None]
    assert all(s["authorization"] == f"Bearer {EXTERNAL_TOKEN}" for s in sent)
    assert all(s["body"]["model"] == EXTERNAL_MODEL for s in sent)
    assert "discussion_plan" in json.dumps(sent[0]["body"]["response_format"])

    # The token is nowhere else: not in the stream, the transcript, the options, the status
    # pages, metrics, the API description, nor in any log of the gateway or the model services.
    transcript = httpx.get(f"{gateway.url}/api/modes/transcripts/{events[-1]['transcript']}").text
    pages = [httpx.get(gateway.url + path, timeout=10).text
             for path in ("/api/modes/options", "/api/status", "/status", "/metrics", "/openapi.json",
                          "/modes/discussion")]
    logs = [p.log_path.read_text(errors="replace") for p in (gateway, *fleet["services"].values())]
    for place in (text, transcript, *pages, *logs):
        assert EXTERNAL_TOKEN not in place
    assert "External: " + EXTERNAL_MODEL in pages[0]


def test_external_orchestrator_judging_complete_stops_early_and_transcripts_survive_a_restart(external, fleet):
    fake = external["fake"]
    # One answer that is a valid plan (p2 the expert) and a valid judgement (complete).
    fake.set_answer('{"domains": ["geography"], "expertise": {"p1": 1, "p2": 9}, "complete": true, '
                    '"reason": "Paris answers it."}')
    try:
        events = run_mode(external["gateway"].url, "discussion", {
            "question": "What is the capital of France?", "participants": [SMOL, GEMMA], "rounds": 3,
            "max_tokens": 6, "temperature": 0, "orchestrator": "external"})
    finally:
        fake.set_answer("<<not json>>")
    plan = of_type(events, "evaluation", kind="plan")[0]
    assert plan["source"] == "model" and plan["order"] == ["p2", "p1"] and plan["domains"] == ["geography"]
    assert [e["participant"] for e in of_type(events, "turn_start", role="contribution")] == ["p2", "p1"]
    assert of_type(events, "evaluation", kind="early_stop")[0]["round"] == 1
    assert not of_type(events, "turn_start", round=2) and not of_type(events, "turn_start", round=3)

    external["gateway"].stop()
    external["gateway"] = start_modes_gateway(external["data"], external["urls"], **external["env"])
    stored = httpx.get(f"{external['gateway'].url}/api/modes/transcripts/{events[-1]['transcript']}", timeout=5)
    assert stored.status_code == 200 and stored.json()["events"] == [e for e in events if e["type"] != "token"]


def test_turn_and_session_time_limits(external, fleet, tmp_path):
    """A turn over its limit is skipped; a session over its limit ends with `timeout`."""
    fake = external["fake"]
    gateway = start_modes_gateway(tmp_path, external["urls"], **external["env"], ARENA_MODES_TURN_TIMEOUT="1.5",
                                  ARENA_MODES_SESSION_TIMEOUT="2.5")
    fake.set_answer('{"domains": ["x"], "expertise": {"p1": 1, "p2": 1}}', delay=5)
    try:
        events = run_mode(gateway.url, "discussion", {
            "question": "What is the capital of France?", "participants": [SMOL, GEMMA], "rounds": 2,
            "max_tokens": 4, "temperature": 0, "orchestrator": "external"}, timeout=60)
    finally:
        fake.set_answer("<<not json>>")
        gateway.stop()
    plan = of_type(events, "turn_end", role="plan")[0]
    assert plan["status"] == "skipped" and plan["error"] == "timed out after 1.5 s"
    assert of_type(events, "evaluation", kind="plan")[0]["source"] == "fallback"
    assert of_type(events, "error", code="session_timeout")
    assert events[-1]["status"] == "timeout" and events[-1]["seconds"] < 10
