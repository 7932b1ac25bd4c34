"""The database lost while a gateway runs: 503 where it is needed, streams unaffected, and
recovery without a restart (a real PostgreSQL server stopped and started again)."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.gateway.conftest import GEMMA, SMOL, assert_openai_error, chat_body, gateway_env, wait_ready, wait_until
from tests.postgres import PostgresCluster, _bin_dir

TOKEN = "reg-token-outage"


@pytest.fixture
def own_postgres():
    """A cluster of this test's own, since the test stops it."""
    cluster = PostgresCluster(_bin_dir())
    cluster.start()
    yield cluster
    cluster.remove()


def test_a_lost_database_answers_503_keeps_streams_and_recovers(tmp_path, own_postgres, fake_upstreams, gateways):
    slow = fake_upstreams("--chunks", "30", "--chunk-delay", "0.1", model=SMOL)
    gemma = fake_upstreams(model=GEMMA)
    gateway = gateways(gateway_env(tmp_path, {SMOL: [slow.url], GEMMA: [gemma.url]},
                                   ARENA_DATABASE_URL=own_postgres.create_database(), ARENA_REGISTRATION_TOKEN=TOKEN,
                                   ARENA_GATEWAY_ADMIN_KEY="admin-key-of-the-outage-test"))
    wait_ready(gateway, f"{SMOL}-0", f"{GEMMA}-0")
    client = httpx.Client(timeout=30)
    assert client.get(gateway.url + "/api/leaderboard").status_code == 200

    streamed: dict[str, bytes] = {}
    started = threading.Event()

    def stream() -> None:
        with client.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(stream=True)) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                started.set()
            streamed["body"] = b"".join(chunks)

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert started.wait(10)
    own_postgres.stop()
    try:
        for response in (client.get(gateway.url + "/api/leaderboard"),
                         client.post(gateway.url + "/api/battles", json={"prompt": "hi"}),
                         client.post(gateway.url + "/api/instances", headers={"Authorization": f"Bearer {TOKEN}"},
                                     json={"model": SMOL, "url": slow.url, "instance_id": "x"})):
            assert_openai_error(response, 503, "database_unavailable")
            assert response.headers["retry-after"]
        # What needs no database still works: a completion, the status API.
        assert client.post(gateway.url + "/v1/chat/completions", json=chat_body(model=GEMMA)).status_code == 200
        assert client.get(gateway.url + "/api/instances").status_code == 200
        for token in (TOKEN, "a-key-the-gateway-cannot-look-up", "admin-key-of-the-outage-test"):
            for path in ("/api/status", "/api/instances"):  # the public view, whatever key is sent
                shown = client.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"})
                assert shown.status_code == 200 and slow.url not in shown.text, (path, shown.text)
        streaming.join(30)
        assert streamed["body"].rstrip().endswith(b"data: [DONE]"), streamed["body"][-200:]
    finally:
        own_postgres.start()
    wait_until(lambda: client.get(gateway.url + "/api/leaderboard").status_code == 200, timeout=15,
               what="the gateway using the database again")
    created = client.post(gateway.url + "/api/battles", json={"prompt": "hi"})
    assert created.status_code == 201, created.text
