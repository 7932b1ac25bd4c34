"""A battle and its vote over HTTP, as the arena's page does them (for the replica and handoff tests)."""

from __future__ import annotations

import httpx


def battle_and_vote(client: httpx.Client, base_url: str, *, vote_url: str | None = None,
                    winner: str = "model_a", user: str | None = None) -> str:
    """Create a battle on `base_url`, stream both sides, vote (on `vote_url`, default the same); the battle id.

    `user`, an address, makes the request come from that user as the tunnel would forward it
    (`X-Forwarded-For`, believed from loopback): the arena limits battles per user and minute.
    """
    forwarded = {"X-Forwarded-For": user} if user else {}
    created = client.post(f"{base_url}/api/battles", json={"prompt": "Say hi", "max_tokens": 8}, headers=forwarded)
    created.raise_for_status()
    battle = created.json()
    token = {"X-Battle-Token": battle["token"], **forwarded}  # only the battle's opener may stream and vote
    for side in ("a", "b"):
        with client.stream("POST", f"{base_url}{battle['sides'][side]['stream_url']}", headers=token) as stream:
            stream.raise_for_status()
            body = b"".join(stream.iter_bytes())
        assert b"[DONE]" in body, body[-200:]
    voted = client.post(f"{vote_url or base_url}/api/battles/{battle['id']}/vote", json={"winner": winner},
                        headers=token)
    voted.raise_for_status()
    return battle["id"]


def leaderboard_votes(client: httpx.Client, base_url: str) -> int:
    response = client.get(f"{base_url}/api/leaderboard")
    response.raise_for_status()
    return response.json()["votes"]
