"""Blind for real: the channels a script could use to tell a battle's sides apart are closed.

Against the real gateway and real model services (the package's shared fleet).
"""

from __future__ import annotations

import json
import re

import httpx

from gateway.arena.battles import WordChunker
from tests.arena.conftest import MODELS

PROMPT = "What colour is grass? Answer in one word."
ALLOWED_CHUNK_KEYS = {"id", "object", "created", "model", "choices"}


def metric_total(text: str, name: str, model: str) -> float:
    return sum(float(v) for v in re.findall(rf'^{name}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$', text,
                                             flags=re.M))


def side_events(gateway: str, battle_id: str, side: str, token: str) -> list[dict]:
    with httpx.stream("POST", f"{gateway}/api/battles/{battle_id}/sides/{side}/stream", timeout=120,
                      headers={"X-Battle-Token": token}) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert body.endswith("data: [DONE]\n\n")
    return [json.loads(p) for p in re.findall(r"^data: (\{.*\})$", body, flags=re.M)]


def test_the_token_count_recipe_learns_nothing(fleet):
    gateway = fleet["gateway"].url
    # The recipe: ask each model directly how many tokens the prompt is...
    prompt_tokens = {}
    for model in MODELS:
        r = httpx.post(gateway + "/v1/chat/completions", timeout=120, json={
            "model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1})
        prompt_tokens[model] = r.json()["usage"]["prompt_tokens"]
    assert len(set(prompt_tokens.values())) == 2  # the tokenizers and templates differ: the channel is real
    metrics_before = httpx.get(gateway + "/metrics").text

    # ... then open a battle with the same prompt and look at everything the sides send.
    battle = httpx.post(gateway + "/api/battles", json={"prompt": PROMPT, "max_tokens": 600, "temperature": 0})
    assert battle.status_code == 201, battle.text
    battle = battle.json()
    token = battle.pop("token")
    view = httpx.get(f"{gateway}/api/battles/{battle['id']}").json()
    for shown in (battle, view):
        text = json.dumps(shown)
        for word in ("seed", "ttft", "tokens_per_second", "tokens", "usage", *MODELS):
            assert f'"{word}"' not in text and word not in text.replace("max_tokens", ""), word
        assert shown["settings"]["max_tokens"] == 600  # the request, not the models' clamped limit

    events = {side: side_events(gateway, battle["id"], side, token) for side in "ab"}
    for side, evs in events.items():
        chunks = [e for e in evs if e.get("object") == "chat.completion.chunk"]
        assert chunks and all(set(e) <= ALLOWED_CHUNK_KEYS for e in chunks)
        assert {e["model"] for e in chunks} == {f"Model {side.upper()}"}
        raw = json.dumps(evs)
        for key in ("usage", "prompt_tokens", "completion_tokens", "total_tokens", "ttft", "tokens_per_second"):
            assert key not in raw
        pieces = [c["delta"]["content"] for e in chunks for c in e["choices"] if c["delta"].get("content")]
        # Cut into words (a function of the text alone), not at the model's tokens.
        assert pieces == WordChunker._PIECE.findall("".join(pieces))
        assert evs[-1] == {"object": "arena.side.done", "side": side, "status": "done",
                           "finish_reason": evs[-1]["finish_reason"]}
    # The two sides' envelopes are identical apart from the label.
    assert {e["created"] for evs in events.values() for e in evs if "created" in e} == {battle["created"]}

    # Live figures are withheld, and the battle's requests were counted under no model.
    status = httpx.get(gateway + "/api/status").json()
    assert status["live_load_hidden"] is True
    assert all(m["outstanding"] is None and m["tokens_per_second"] is None for m in status["models"])
    assert all(i["active"] is None and i["queued"] is None for m in status["models"] for i in m["instances"])
    metrics_after = httpx.get(gateway + "/metrics").text
    for model in MODELS:
        for name in ("arena_gateway_requests_total", "arena_gateway_tokens_total"):
            assert metric_total(metrics_after, name, model) == metric_total(metrics_before, name, model), (name, model)
    assert metric_total(metrics_after, "arena_gateway_requests_total", "arena-battle") >= 2
    assert "arena_gateway_instance_outstanding_requests{" not in metrics_after

    # After the vote, everything.
    vote = httpx.post(f"{gateway}/api/battles/{battle['id']}/vote", json={"winner": "tie"},
                      headers={"X-Battle-Token": token})
    assert vote.status_code == 200, vote.text
    revealed = vote.json()["revealed"]
    assert {revealed[s]["model"] for s in "ab"} == set(MODELS)
    assert all(revealed[s]["tokens"] > 0 and revealed[s]["ttft"] > 0 for s in "ab")
    after = httpx.get(f"{gateway}/api/battles/{battle['id']}").json()
    assert "seed" in after["settings"] and after["settings"]["max_tokens"] <= 512
