"""Two gateway processes on one PostgreSQL: registrations, votes, key revocations and rate limits
are shared; health stays each gateway's own."""

from __future__ import annotations

import httpx

from tests.gateway.conftest import (GEMMA, SMOL, assert_openai_error, chat_body, gateway_env, instance_state,
                                    wait_until)
from tests.store.arena_client import battle_and_vote, leaderboard_votes

TOKEN = "reg-token-replicas"
ADMIN = {"Authorization": "Bearer admin-replicas-0123456789"}


def test_two_gateways_share_one_postgresql(tmp_path, postgres, fake_upstreams, gateways):
    smol, gemma, extra = fake_upstreams(model=SMOL), fake_upstreams(model=GEMMA), fake_upstreams(model=SMOL)
    env = gateway_env(tmp_path, {SMOL: [smol.url], GEMMA: [gemma.url]}, ARENA_DATABASE_URL=postgres.create_database(),
                      ARENA_REGISTRATION_TOKEN=TOKEN, require_api_key="true", admin_key="admin-replicas-0123456789")
    one, two = gateways(env), gateways(env)
    client = httpx.Client(timeout=15)

    # A key made through one gateway works through the other at once.
    key = client.post(one.url + "/api/admin/keys", json={"name": "shared", "rpm": 4}, headers=ADMIN).json()
    free = client.post(one.url + "/api/admin/keys", json={"name": "arena"}, headers=ADMIN).json()
    limited = {"Authorization": f"Bearer {key['key']}"}
    wait_until(lambda: instance_state(two, f"{SMOL}-0") == "ready" and instance_state(one, f"{SMOL}-0") == "ready")

    # 4 per minute across both gateways: 4 of 8 requests pass, not 8.
    statuses = [client.post(g.url + "/v1/chat/completions", json=chat_body(), headers=limited).status_code
                for g in (one, two) * 4]
    assert statuses.count(200) == 4 and statuses.count(429) == 4, statuses

    # Registered through one: routable through the other within one sync (1 s), probed by it.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reg = client.post(one.url + "/api/instances", headers=auth,
                      json={"model": SMOL, "url": extra.url, "instance_id": "shared-1", "ttl_seconds": 60})
    assert reg.status_code == 200, reg.text
    auth["X-Arena-Registration-Secret"] = reg.json()["registration_secret"]
    wait_until(lambda: instance_state(two, "shared-1") == "ready", timeout=5, what="registration seen by the other")
    assert client.post(two.url + "/api/instances/shared-1/heartbeat", headers=auth).status_code == 200

    # A vote cast through one shows on both leaderboards.
    arena = {"Authorization": f"Bearer {free['key']}"}
    arena_client = httpx.Client(timeout=30, headers=arena)
    battle_and_vote(arena_client, one.url, vote_url=two.url)
    wait_until(lambda: leaderboard_votes(client, one.url) == 1 and leaderboard_votes(client, two.url) == 1,
               timeout=5, what="the vote on both leaderboards")

    # Deregistered through the other: gone from both.
    assert client.delete(two.url + "/api/instances/shared-1", headers=auth).status_code == 200
    wait_until(lambda: instance_state(one, "shared-1") == "gone", timeout=5, what="deregistration seen by the other")

    # Revoked through one: refused by the other within a few seconds.
    assert client.delete(one.url + f"/api/admin/keys/{free['key_id']}", headers=ADMIN).status_code == 200
    refused = wait_until(lambda: (r := arena_client.post(two.url + "/v1/chat/completions", json=chat_body()))
                         .status_code == 401 and r, timeout=5, what="revoked key refused by the other gateway")
    assert_openai_error(refused, 401, "invalid_api_key")
