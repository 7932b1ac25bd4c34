"""The gateway hands off to its successor with nothing lost (issue #10's drill).

A client sends chat requests and casts votes every 300 ms through whichever gateway answers.
On PostgreSQL the successor starts beside the predecessor on the same database, then the
predecessor drains (SIGTERM) and exits. On SQLite the predecessor drains and exits, its whole
data directory is snapshotted and restored for the successor, which then starts (the path of a
fleet without a database server). Figures go to build/drills/gateway-handoff.json.
"""

from __future__ import annotations

import json
import shutil
import signal

import httpx

from tests.gateway.conftest import GEMMA, SMOL, chat_body, gateway_env, wait_ready, wait_until
from tests.harness import PROJECT_ROOT, free_port
from tests.store.handoff_drill import DrillClient, DrillFigures

REPORT = PROJECT_ROOT / "build" / "drills" / "gateway-handoff.json"


def _record(store: str, figures: DrillFigures) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[store] = {k: v for k, v in figures.__dict__.items() if k != "battle_ids"}
    REPORT.write_text(json.dumps(report, indent=2))
    print(figures.line(store))


def _votes_on(url: str) -> tuple[int, set[str]]:
    board = httpx.get(url + "/api/leaderboard", timeout=30).json()["votes"]
    lines = httpx.get(url + "/api/votes.jsonl", timeout=30).text.splitlines()
    return board, {json.loads(line)["battle_id"] for line in lines}


def _upstreams(fake_upstreams) -> dict[str, list[str]]:
    return {SMOL: [fake_upstreams(model=SMOL).url], GEMMA: [fake_upstreams(model=GEMMA).url]}


def _wait_until_client_did(client: DrillClient, votes: int) -> None:
    wait_until(lambda: client.figures.votes_cast >= votes, timeout=30, what=f"{votes} more votes")


def _check(store: str, client: DrillClient, successor_url: str) -> DrillFigures:
    figures = client.stop()
    board, found = _votes_on(successor_url)
    figures.votes_found = len(found & set(figures.battle_ids))
    _record(store, figures)
    assert figures.requests_failed == 0, figures
    assert figures.votes_cast >= 6 and figures.votes_found == figures.votes_cast == board, figures
    return figures


def test_handoff_on_postgresql_loses_nothing_and_never_stops_answering(tmp_path, postgres, fake_upstreams,
                                                                        gateways):
    env = gateway_env(tmp_path, _upstreams(fake_upstreams), ARENA_DATABASE_URL=postgres.create_database(),
                      drain_linger="0.5")
    first = gateways(env)
    wait_ready(first, f"{SMOL}-0", f"{GEMMA}-0")
    successor_port = free_port()
    client = DrillClient([first.url, f"http://127.0.0.1:{successor_port}"], chat_body())
    client.start()
    _wait_until_client_did(client, 3)
    second = gateways(env, port=successor_port)
    wait_ready(second, f"{SMOL}-0", f"{GEMMA}-0")
    first.process.send_signal(signal.SIGTERM)
    assert first.wait_exit(timeout=60) == 0
    _wait_until_client_did(client, client.figures.votes_cast + 3)
    figures = _check("postgresql", client, second.url)
    assert figures.seconds_unanswered < 1.0, figures


def test_handoff_on_sqlite_with_a_snapshot_of_the_data_directory(tmp_path, fake_upstreams, gateways):
    upstreams = _upstreams(fake_upstreams)
    old_dir, new_dir = tmp_path / "old-machine" / "data", tmp_path / "new-machine" / "data"
    old_dir.mkdir(parents=True)
    first = gateways(gateway_env(old_dir, upstreams, drain_linger="0.5"))
    wait_ready(first, f"{SMOL}-0", f"{GEMMA}-0")
    successor_port = free_port()
    client = DrillClient([first.url, f"http://127.0.0.1:{successor_port}"], chat_body())
    client.start()
    _wait_until_client_did(client, 3)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait_exit(timeout=60) == 0
    shutil.copytree(old_dir, new_dir)  # the whole data directory: every file of the store
    second = gateways(gateway_env(new_dir, upstreams, drain_linger="0.5"), port=successor_port)
    wait_ready(second, f"{SMOL}-0", f"{GEMMA}-0")
    _wait_until_client_did(client, client.figures.votes_cast + 3)
    _check("sqlite", client, second.url)
