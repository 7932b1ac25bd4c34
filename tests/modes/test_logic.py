"""The modes' plain logic: reading models' JSON and text robustly, aggregating rankings,
similarity, participants, session bounds. No processes: these are pure functions and classes."""

from __future__ import annotations

import pytest

from gateway.modes.events import EVENT_ADAPTER
from gateway.modes.manager import ClientSlots
from gateway.modes.session import make_participants
from gateway.modes.similarity import jaccard, round_similarity
from gateway.modes.structured import aggregate, parse_judgement, parse_plan, parse_ranking
from shared.errors import ApiError

IDS = ["p1", "p2", "p3"]


def test_plan_from_valid_json_orders_most_expert_first():
    plan = parse_plan('{"domains": ["geography"], "expertise": {"p1": 2, "p2": 8, "p3": 0}}', IDS)
    assert plan.source == "model" and plan.domains == ["geography"]
    assert plan.weights == {"p1": 0.2, "p2": 0.8, "p3": 0.0}
    assert plan.order(IDS) == ["p2", "p1", "p3"]


def test_plan_found_inside_prose_and_clamped():
    plan = parse_plan('Sure! {"domains": ["maths"], "expertise": {"p1": 50, "p2": -3, "p3": 10}} hope it helps', IDS)
    assert plan.source == "model"
    assert plan.weights == {"p1": 0.5, "p2": 0.0, "p3": 0.5}


@pytest.mark.parametrize("text", ["", "garbage }{", '{"domains": [], "expertise": {}}', '["p1"]',
                                  '{"domains": ["x"], "expertise": {"p1": "lots"}}',
                                  '{"domains": ["x"], "expertise": {"p1": 0, "p2": 0, "p3": 0}}',
                                  "[" * 6000])  # nested past the JSON parser's recursion limit
def test_plan_falls_back_to_equal_weights(text):
    plan = parse_plan(text, IDS)
    assert plan.source == "fallback" and plan.note
    assert plan.weights == pytest.approx({"p1": 1 / 3, "p2": 1 / 3, "p3": 1 / 3})
    assert plan.order(IDS) == IDS


def test_judgement_valid_and_fallback():
    assert parse_judgement('{"complete": true, "reason": "Paris is right."}').complete is True
    garbage = parse_judgement('{"complete": "yes"}')
    assert (garbage.complete, garbage.source) == (False, "fallback")
    assert parse_judgement("no idea").source == "fallback"
    assert parse_judgement("[" * 6000).source == "fallback"


@pytest.mark.parametrize("text, order, source", [
    ('{"ranking": ["C", "A", "B"]}', ["C", "A", "B"], "json"),
    ('{"ranking": ["Response B", "c", "B", "Z"]}', ["B", "C", "A"], "json"),   # repeats and unknowns dropped, completed
    ("Response B is the best, then Response A, and Response C is worst.", ["B", "A", "C"], "text"),
    ("Ranking: C > B > A", ["C", "B", "A"], "text"),
    ("1. B\n2. C\n3. A", ["B", "C", "A"], "text"),
    ("I think a good answer is hard to pick.", [], "none"),                    # a lone lower-case "a" is no letter
    ("nothing useful here", [], "none"),
    ('{"ranking": ' + "[" * 6000 + "}", [], "none"),                       # too deep for the JSON parser
])
def test_ranking_parser(text, order, source):
    parsed = parse_ranking(text, ["A", "B", "C"])
    assert (parsed.order, parsed.source) == (order, source)


def test_aggregate_mean_rank_first_places_and_ties():
    standings = aggregate({"p1": ["p2", "p3"], "p2": ["p3", "p1"], "p3": ["p2", "p1"]}, IDS)
    assert [s.participant for s in standings] == ["p2", "p3", "p1"]
    by = {s.participant: s for s in standings}
    assert (by["p2"].mean_rank, by["p2"].rankers, by["p2"].first_places) == (1.0, 2, 2)
    assert (by["p3"].mean_rank, by["p3"].first_places) == (1.5, 1)
    assert by["p1"].mean_rank == 2.0
    unranked = aggregate({}, IDS)
    assert [s.participant for s in unranked] == IDS and all(s.mean_rank is None for s in unranked)


def test_similarity():
    assert jaccard("The sky is blue", "the SKY is blue!") == 1.0
    assert jaccard("red apples", "green pears") == 0.0
    assert jaccard("a b c d", "a b") == 0.5
    mean, pairs = round_similarity({"p1": "a b", "p2": "a b", "p3": "c d"})
    assert pairs == {"p1|p2": 1.0, "p1|p3": 0.0, "p2|p3": 0.0}
    assert mean == pytest.approx(1 / 3, abs=1e-4)
    assert round_similarity({"p1": "alone"}) == (None, {})


def test_participants_named_apart_when_a_model_repeats():
    people = make_participants(["m", "n", "m"], {"m": "Model M"})
    assert [(p.id, p.name) for p in people] == [("p1", "Model M #1"), ("p2", "n"), ("p3", "Model M #2")]


def test_client_slots_bound_per_client_and_in_all():
    slots = ClientSlots(per_client=2, total=3)
    first = slots.acquire("a")
    slots.acquire("a")
    with pytest.raises(ApiError) as exc:
        slots.acquire("a")
    assert (exc.value.status, exc.value.code) == (429, "too_many_sessions")
    slots.acquire("b")
    with pytest.raises(ApiError) as exc:
        slots.acquire("c")
    assert exc.value.status == 503
    first()
    first()  # releasing twice frees one slot only
    assert slots.running("a") == 1 and slots.running() == 2
    slots.acquire("c")


def test_event_schema_rejects_unknown_types():
    assert EVENT_ADAPTER.validate_python({"type": "token", "turn": "t1", "participant": "p1", "text": "x"})
    with pytest.raises(ValueError):
        EVENT_ADAPTER.validate_python({"type": "chatter", "text": "x"})


async def test_session_starts_are_limited_per_client_per_minute(tmp_path):
    from gateway.modes.chat import FleetChat
    from gateway.modes.manager import ModesService
    from gateway.modes.session import ModeRequest
    from gateway.modes.settings import ModesSettings
    from gateway.modes.transcripts import TranscriptRepository
    from gateway.store import Database
    from gateway.store.database import sqlite_url
    from shared.catalogue import load_catalogue

    catalogue = load_catalogue()
    catalogue = catalogue.model_copy(update={"arena": catalogue.arena.model_copy(update={"sessions_per_minute": 2})})
    models = list(catalogue.models)[:2]
    db = Database(sqlite_url(tmp_path / "store.sqlite3"))
    await db.upgrade()

    async def never_called(body):  # the sessions are opened, never run
        raise AssertionError("no session runs in this test")
        yield b""

    service = ModesService(catalogue, ModesSettings(), FleetChat(never_called), lambda: models,
                           TranscriptRepository(db))
    request = ModeRequest(question="Why?", participants=models)
    try:
        for _ in range(2):
            _, stream = await service.open("roundtable", request, "addr:a")
            await stream.aclose()  # the slot is free again: only the per-minute limit holds the next back
        with pytest.raises(ApiError) as err:
            await service.open("roundtable", request, "addr:a")
        assert err.value.status == 429 and err.value.code == "rate_limit_exceeded" and err.value.headers["Retry-After"]
        assert "sessions started" in err.value.message
        _, stream = await service.open("roundtable", request, "addr:b")  # another client is not held back
        await stream.aclose()
    finally:
        await db.dispose()


def test_model_ids_in_a_session_request_are_bounded():
    from pydantic import ValidationError

    from gateway.modes.session import MODEL_ID_MAX, ModeRequest

    long_id = "m" * (MODEL_ID_MAX + 1)
    for body in ({"participants": [long_id, "m"]}, {"participants": ["m", "n"], "orchestrator": long_id},
                 {"participants": ["m", "n"], "chairman": "p" * 17}):
        with pytest.raises(ValidationError):
            ModeRequest(question="q", **body)
    assert ModeRequest(question="q", participants=["m" * MODEL_ID_MAX, "n"], orchestrator="").orchestrator == ""
