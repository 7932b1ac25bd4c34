"""A gateway killed (SIGKILL) while battle sides stream: the next gateway on the same store ends
them once they are stale, so the battle can be regenerated and shared again.

The arena's fleet's real models, behind gateways of this test's own on one data directory,
with a short answer deadline (a live side's gateway holds a lease of one deadline on it, renewed
every third of it; a side whose lease ran out is a dead gateway's).
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.arena.conftest import MODELS, fleet_urls, wait_models
from tests.harness import wait_until

DEADLINE = 15  # seconds (the first words may take several on a loaded machine)
LONG = {"prompt": "Continue the sequence: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 512, "temperature": 0.0}


@pytest.fixture()
def arena_gateway(fleet, tmp_path, gateways):
    """Start a gateway on the test's store in front of the fleet's models (the `gateways` fixture
    stops them all at the end)."""
    env = {"ARENA_FLEET__DATA_DIR": str(tmp_path), "ARENA_ARENA__ANSWER_DEADLINE": str(DEADLINE),
           "ARENA_ARENA__BATTLES_PER_MINUTE": "1000", "ARENA_ARENA__VOTES_PER_MINUTE": "1000",
           **fleet_urls(fleet["services"])}

    def start():
        gateway = gateways(env)
        wait_models(gateway.url, MODELS)
        return gateway

    return start


class OpenSide:
    """A side streamed until its first words arrive, then left open until `close()`."""

    def __init__(self, client: httpx.Client, url: str, token: str) -> None:
        self.stream = client.send(client.build_request("POST", url, headers={"X-Battle-Token": token}), stream=True)
        assert self.stream.status_code == 200, self.stream.read()
        self.lines = self.stream.iter_lines()  # held: dropping it would close the connection
        for line in self.lines:
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                assert "error" not in event, event
                if any(c["delta"].get("content") for c in event.get("choices", [])):
                    return
        raise AssertionError("the side ended before saying anything")

    def close(self) -> None:
        self.lines.close()
        self.stream.close()


def sides(client: httpx.Client, base: str, battle_id: str) -> dict:
    return client.get(f"{base}/api/battles/{battle_id}").json()["sides"]


def test_sides_streaming_when_the_gateway_is_killed_are_ended_by_the_next_one(arena_gateway):
    first = arena_gateway()
    with httpx.Client(timeout=60) as client:
        # A voted battle: both sides stopped after their first words (a stopped answer is votable).
        voted = client.post(f"{first.url}/api/battles", json=LONG).json()
        for side in ("a", "b"):
            OpenSide(client, first.url + voted["sides"][side]["stream_url"], voted["token"]).close()
        wait_until(lambda: {s["status"] for s in sides(client, first.url, voted["id"]).values()} == {"stopped"}, 30,
                   what="both sides recorded as stopped")
        shown = sides(client, first.url, voted["id"])["a"]["answer"]
        token = {"X-Battle-Token": voted["token"]}
        assert client.post(f"{first.url}/api/battles/{voted['id']}/vote", json={"winner": "tie"},
                           headers=token).status_code == 200
        # Side a regenerating, and a new battle's first answer, both mid-stream at the kill.
        assert client.post(f"{first.url}/api/battles/{voted['id']}/regenerate", json={"sides": ["a"]},
                           headers=token).status_code == 200
        regenerating = OpenSide(client, f"{first.url}/api/battles/{voted['id']}/sides/a/stream",
                                       voted["token"])
        unvoted = client.post(f"{first.url}/api/battles", json=LONG).json()
        answering = OpenSide(client, first.url + unvoted["sides"]["a"]["stream_url"], unvoted["token"])
        first.kill()
        for stream in (regenerating, answering):
            stream.close()

        second = arena_gateway()
        wait_until(lambda: sides(client, second.url, voted["id"])["a"]["status"] != "streaming", DEADLINE * 4,
                   what="the killed regeneration ended")
        view = client.get(f"{second.url}/api/battles/{voted['id']}").json()
        # The regeneration never happened: the answer shown before it is back, and it is not counted.
        assert (view["sides"]["a"]["status"], view["sides"]["a"]["answer"]) == ("stopped", shown)
        assert view["regenerated"]["a"] == 0 and view["vote"] == "tie", json.dumps(view)
        share = client.post(f"{second.url}/api/battles/{voted['id']}/share", headers=token)
        assert share.status_code == 201, share.text
        shared = client.get(f"{second.url}/api/shares/{share.json()['id']}").json()["battle"]
        assert shared["sides"]["a"]["answer"] == shown
        # And it can be regenerated again.
        again = client.post(f"{second.url}/api/battles/{voted['id']}/regenerate", json={"sides": ["a"]},
                            headers=token)
        assert again.status_code == 200, again.text
        OpenSide(client, f"{second.url}/api/battles/{voted['id']}/sides/a/stream", voted["token"]).close()

        # The unvoted battle's side said nothing the gateway kept: it ends as an error, not "streaming".
        side = sides(client, second.url, unvoted["id"])["a"]
        assert side["status"] == "error" and "restarted" in side["error"], side
