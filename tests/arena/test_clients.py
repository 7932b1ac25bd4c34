"""Client ids behind trusted proxies only, per-client limits, the live-load shield."""

from __future__ import annotations

import pytest

from gateway.arena.activity import BattleActivity
from starlette.requests import Request

from gateway.arena.clients import ClientIdentifier, ClientLimits, client_network
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


def _request(peer: str, forwarded_for: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded_for.encode())] if forwarded_for else []
    return Request({"type": "http", "method": "POST", "path": "/api/battles", "headers": headers,
                    "client": (peer, 50000), "query_string": b""})


def test_an_ipv6_client_is_its_64_and_an_ipv4_client_its_address():
    ids = ClientIdentifier(["127.0.0.1", "::1"])
    one, other = ids.client_id(_request("2001:db8:1:2::5")), ids.client_id(_request("2001:db8:1:2:ffff:1:2:3"))
    assert one == other == "addr:2001:db8:1:2::/64"                    # rotating within the /64 changes nothing
    assert ids.client_id(_request("2001:db8:1:3::5")) != one           # the next /64 is another client
    assert ids.client_id(_request("::1", "2001:db8:9:9:a:b:c:d")) == "addr:2001:db8:9:9::/64"  # behind the tunnel
    assert ids.client_id(_request("198.51.100.7")) == "addr:198.51.100.7"
    assert ids.client_id(_request("198.51.100.8")) != "addr:198.51.100.7"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.7"     # IPv4 over an IPv6 socket
    assert client_network("unknown") == "unknown"


async def test_addresses_of_one_ipv6_64_share_one_limit(tmp_path):
    db = Database(sqlite_url(tmp_path / "store.sqlite3"))
    await db.upgrade()
    ids = ClientIdentifier([])
    limits = ClientLimits(ArenaPolicy(battles_per_minute=2, votes_per_minute=1), RateLimiter(db, clock=lambda: 600.0))
    try:
        for host in ("2001:db8:7:7::1", "2001:db8:7:7::2"):
            await limits.check("battle", ids.client_id(_request(host)))
        with pytest.raises(ApiError) as err:
            await limits.check("battle", ids.client_id(_request("2001:db8:7:7:dead:beef:0:3")))
        assert err.value.status == 429
        await limits.check("battle", ids.client_id(_request("2001:db8:7:8::1")))  # another /64 is not held back
    finally:
        await db.dispose()


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
