"""Client ids behind trusted proxies only, per-client limits, the live-load shield."""

from __future__ import annotations

import pytest

from gateway.arena.activity import BattleActivity
from gateway.arena.clients import ClientIdentifier, ClientLimits
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


def test_limits_per_client_and_action():
    limits = ClientLimits(ArenaPolicy(battles_per_minute=2, votes_per_minute=1))
    limits.check("battle", "addr:a", now=0.0)
    limits.check("battle", "addr:a", now=1.0)
    with pytest.raises(ApiError) as err:
        limits.check("battle", "addr:a", now=2.0)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "58"
    limits.check("battle", "addr:b", now=2.0)  # another client is not held back
    limits.check("vote", "addr:a", now=2.0)    # nor another action
    limits.check("battle", "addr:a", now=61.0)  # the window moved on


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
