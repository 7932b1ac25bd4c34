"""Each mode end to end: real generations of the embedded models through a real gateway.

Answers are a few tokens long: the models run on a shared CPU, and what is tested is the
modes' flow, not the answers' quality."""

from __future__ import annotations

import httpx
import pytest

from gateway.modes.events import EVENT_ADAPTER
from gateway.modes.similarity import round_similarity
from tests.harness import assert_openai_error, wait_until
from tests.modes.conftest import GEMMA, SMOL, of_type, run_mode

QUESTION = "What is the capital of France?"


def check_events(events: list[dict]) -> None:
    for event in events:
        EVENT_ADAPTER.validate_python(event)   # every event has its documented shape
    starts = {e["turn"] for e in of_type(events, "turn_start")}
    ends = {e["turn"] for e in of_type(events, "turn_end")}
    assert starts == ends, "every turn that started ended"


def test_council_of_three_answers_in_parallel_ranks_blind_and_chairs(fleet, capsys):
    url = fleet["gateway"].url
    events = run_mode(url, "council", {"question": QUESTION, "participants": [SMOL, GEMMA, SMOL],
                                       "max_tokens": 8, "temperature": 0})
    check_events(events)
    assert events[-1]["status"] == "done"
    answers = of_type(events, "turn_start", role="answer")
    assert [e["participant"] for e in answers] == ["p1", "p2", "p3"]
    # The three answers run at once: all three started before the first one ended.
    first_end = next(i for i, e in enumerate(events) if e["type"] == "turn_end")
    assert all(events.index(e) < first_end for e in answers)
    answered = [e["participant"] for e in of_type(events, "turn_end", role="answer", status="done")]
    assert len(answered) >= 2, events

    rankers = of_type(events, "ranking", kind="ranker")
    assert sorted(r["ranker"] for r in rankers) == sorted(answered)
    for r in rankers:
        assert r["ranker"] not in r["order"], "nobody ranks itself"
        assert set(r["order"]) <= set(answered) - {r["ranker"]}
        if r["source"] != "single":
            assert sorted(r["letters"]) == ["A", "B"][: len(answered) - 1]   # anonymised as letters
    table = of_type(events, "ranking", kind="aggregate")[0]["table"]
    assert sorted(row["participant"] for row in table) == sorted(answered)
    means = [row["mean_rank"] for row in table if row["mean_rank"] is not None]
    assert means == sorted(means), "best first"
    synthesis = of_type(events, "synthesis")
    chair = of_type(events, "turn_start", role="synthesis")
    assert chair and chair[0]["participant"] == table[0]["participant"], "the best-ranked participant chairs"
    assert not synthesis or synthesis[0]["text"]

    # Measured, not asserted (timings on a shared machine are noise): the answer phase's wall
    # time against its slowest answer and the sum of all three.
    ends = of_type(events, "turn_end", role="answer")
    phase = max(e["t"] for e in ends) - min(e["t"] for e in answers)
    slowest, total = max(e["seconds"] for e in ends), sum(e["seconds"] for e in ends)
    with capsys.disabled():
        print(f"\ncouncil of 3, answer phase: {phase:.2f} s wall, slowest answer {slowest:.2f} s, "
              f"sum of answers {total:.2f} s; whole session {events[-1]['seconds']:.2f} s")

    # The transcript is stored and opens again, as JSON and as a download.
    stored = httpx.get(f"{url}/api/modes/transcripts/{events[-1]['transcript']}", timeout=5)
    assert stored.status_code == 200
    body = stored.json()
    assert body["mode"] == "council" and body["status"] == "done" and body["question"] == QUESTION
    assert body["events"] == [e for e in events if e["type"] != "token"]
    assert [p["model"] for p in body["participants"]] == [SMOL, GEMMA, SMOL]
    download = httpx.get(f"{url}/api/modes/transcripts/{body['id']}?download=1", timeout=5)
    assert "attachment" in download.headers["content-disposition"] and download.json() == body


def test_discussion_plans_speaks_in_order_judges_and_synthesises(fleet):
    events = run_mode(fleet["gateway"].url, "discussion", {
        "question": QUESTION, "participants": [SMOL, GEMMA], "rounds": 2, "max_tokens": 8, "temperature": 0,
        "orchestrator": SMOL})
    check_events(events)
    assert events[-1]["status"] == "done"
    plan = of_type(events, "evaluation", kind="plan")[0]
    assert plan["source"] in ("model", "fallback")
    assert sum(plan["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sorted(plan["order"]) == ["p1", "p2"]
    weights = [plan["weights"][p] for p in plan["order"]]
    assert weights == sorted(weights, reverse=True), "most expert first"
    # The plan and the judgement went through the model service's JSON schema.
    plan_turn = of_type(events, "turn_end", role="plan")[0]
    assert plan_turn["participant"] == "orchestrator"
    round1 = [e["participant"] for e in of_type(events, "turn_start", role="contribution", round=1)]
    assert round1 == plan["order"]
    judgement = of_type(events, "evaluation", kind="judgement")
    assert [j["round"] for j in judgement] == [1]
    round2 = of_type(events, "turn_start", role="contribution", round=2)
    if judgement[0]["complete"]:
        assert not round2 and of_type(events, "evaluation", kind="early_stop")
    else:
        assert [e["participant"] for e in round2] == plan["order"]
    synth = of_type(events, "turn_start", role="synthesis")
    assert synth and synth[0]["participant"] == "orchestrator"
    assert of_type(events, "synthesis") or of_type(events, "turn_end", role="synthesis", status="skipped")


def test_roundtable_revises_in_parallel_and_measures_convergence(fleet):
    events = run_mode(fleet["gateway"].url, "roundtable", {
        "question": "Name a primary colour.", "participants": [SMOL, GEMMA, SMOL], "rounds": 1, "max_tokens": 8,
        "temperature": 0})
    check_events(events)
    assert events[-1]["status"] == "done"
    convergence = of_type(events, "evaluation", kind="convergence")
    assert [c["round"] for c in convergence] == [0, 1]
    for c in convergence:
        texts = {e["participant"]: e["text"] for e in of_type(events, "turn_end", round=c["round"], status="done")}
        assert sorted(texts) == c["answered"]
        assert (c["similarity"], c["pairs"]) == round_similarity(texts)  # the figure is the server's, checked
    revisions = of_type(events, "turn_start", role="revision", round=1)
    assert len(revisions) == 3
    first_end = next(i for i, e in enumerate(events) if e["type"] == "turn_end" and e["round"] == 1)
    assert all(events.index(e) < first_end for e in revisions), "a round's revisions run at once"
    final = of_type(events, "evaluation", kind="final")[0]["answers"]
    assert set(final) <= {"p1", "p2", "p3"} and final


@pytest.mark.parametrize("mode, body, status, code, param", [
    ("council", {"participants": [SMOL]}, 400, None, "participants"),
    ("council", {"participants": [SMOL] * 7}, 400, None, "participants"),
    ("council", {"participants": [SMOL, "no-such-model"]}, 404, "model_not_found", "participants"),
    ("discussion", {"participants": [SMOL, GEMMA], "rounds": 9}, 400, "invalid_value", "rounds"),
    ("roundtable", {"participants": [SMOL, GEMMA], "max_tokens": 4000}, 400, "invalid_value", "max_tokens"),
    ("discussion", {"participants": [SMOL, GEMMA], "orchestrator": "external"}, 400, "invalid_value", "orchestrator"),
    ("council", {"participants": [SMOL, GEMMA], "chairman": "p9"}, 400, "invalid_value", "chairman"),
    ("council", {"participants": [SMOL, GEMMA], "question": ""}, 400, None, "question"),
    ("council", {"participants": [SMOL, GEMMA], "surprise": 1}, 400, None, None),
    ("chatter", {"participants": [SMOL, GEMMA]}, 400, None, None),
])
def test_bad_requests_get_openai_errors(fleet, mode, body, status, code, param):
    body = {"question": QUESTION, **body}
    response = httpx.post(f"{fleet['gateway'].url}/api/modes/{mode}", json=body, timeout=10)
    assert_openai_error(response, status, code, param)


def test_unknown_transcript_is_404(fleet):
    response = httpx.get(f"{fleet['gateway'].url}/api/modes/transcripts/nonexistent-id", timeout=5)
    assert_openai_error(response, 404, "transcript_not_found")


def test_sessions_per_client_are_bounded(fleet):
    url = fleet["gateway"].url
    body = {"question": "Count to fifty.", "participants": [SMOL, SMOL], "rounds": 1, "max_tokens": 64}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/api/modes/roundtable", json=body) as one, \
                client.stream("POST", f"{url}/api/modes/roundtable", json=body) as two:
            assert one.status_code == two.status_code == 200
            third = client.post(f"{url}/api/modes/roundtable", json=body)
            error = assert_openai_error(third, 429, "too_many_sessions")
            assert "2 session" in error["message"] and third.headers["retry-after"]

        def opens() -> bool:
            with client.stream("POST", f"{url}/api/modes/council", json={**body, "max_tokens": 1}) as again:
                return again.status_code == 200

        # Both closed: the client's slots are free again once the gateway saw them go.
        wait_until(opens, 10, what="a session slot freed")


def test_openapi_documents_the_streams(fleet):
    schema = httpx.get(f"{fleet['gateway'].url}/openapi.json", timeout=5).json()
    post = schema["paths"]["/api/modes/{mode}"]["post"]
    stream = post["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert set(stream["discriminator"]["mapping"]) == {"turn_start", "token", "turn_end", "evaluation", "ranking",
                                                       "synthesis", "error", "done"}
    for ref in stream["discriminator"]["mapping"].values():
        assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"]
