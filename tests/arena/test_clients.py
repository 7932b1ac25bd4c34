"""Client ids behind trusted proxies only, per-client limits, the live-load shield."""

from __future__ import annotations

import pytest

from gateway.arena.activity import BattleActivity
from gateway.arena.clients import ClientIdentifier, ClientLimits
from gateway.keys import RateLimiter
from gateway.store import Database
from gateway.store.database import sqlite_url
from shared.catalogue import ArenaPolicy
from shared.errors import ApiError


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    ids = ClientIdentifier(["127.0.0.1", "10.0.0.0/8"])
    assert ids.address("203.0.113.9", "1.2.3.4") == "203.0.113.9"          # not a proxy: its own address
    assert ids.address("127.0.0.1", "198.51.100.7") == "198.51.100.7"       # the tunnel's client
    assert ids.address("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3") == "198.51.100.7"  # right-most untrusted
    assert ids.address("127.0.0.1", "garbage, 10.1.2.3") == "127.0.0.1"     # nothing believable
    assert ids.address("127.0.0.1", None) == "127.0.0.1"
    assert ClientIdentifier([]).address("127.0.0.1", "198.51.100.7") == "127.0.0.1"


async def test_limits_per_client_and_action(tmp_path):
    db = Database(sqlite_url(tmp_path / "store.sqlite3"))
    await db.upgrade()
    now = [600.0]
    limits = ClientLimits(ArenaPolicy(battles_per_minute=2, votes_per_minute=1), RateLimiter(db, clock=lambda: now[0]))
    try:
        await limits.check("battle", "addr:a")
        await limits.check("battle", "addr:a")
        with pytest.raises(ApiError) as err:
            await limits.check("battle", "addr:a")
        assert err.value.status == 429 and err.value.code == "rate_limit_exceeded" and err.value.headers["Retry-After"]
        await limits.check("battle", "addr:b")  # another client is not held back
        await limits.check("vote", "addr:a")    # nor another action
        await limits.check("share", "addr:a")   # share links count apart, at the votes' rate
        with pytest.raises(ApiError) as err:
            await limits.check("share", "addr:a")
        assert err.value.status == 429 and "share links" in err.value.message
        await limits.check("battle", "key:" + "k" * 80)  # a long id still fits the store's column
        now[0] += 120
        await limits.check("battle", "addr:a")  # the window moved on
    finally:
        await db.dispose()


def test_live_load_is_hidden_while_a_side_streams_and_a_grace_after():
    now = [0.0]
    activity = BattleActivity(grace=70.0, clock=lambda: now[0])
    assert not activity.hides_live_load()
    with activity.side_streaming():
        now[0] = 30.0
        assert activity.hides_live_load()
    now[0] = 99.0
    assert activity.hides_live_load()
    now[0] = 100.5
    assert not activity.hides_live_load()
