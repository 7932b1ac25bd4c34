"""Fixtures every test package may use: a real PostgreSQL cluster and a store on SQLite and
PostgreSQL, and real gateway processes (`gateways`).

Every gateway a test starts (in this process, or a child, which inherits the environment)
rebuilds its leaderboard on each request unless the test says otherwise: tests read a vote's
effect at once. The default spacing of rebuilds has its own test (tests/arena/test_leaderboard.py).
"""

import os
from typing import Callable, Iterator

import pytest

from tests.harness import ManagedProcess, start_gateway
from tests.postgres import database, database_url, postgres  # noqa: F401 (fixtures)

os.environ.setdefault("ARENA_UI_LEADERBOARD_MAX_AGE", "0")


@pytest.fixture
def gateways() -> Iterator[Callable[..., ManagedProcess]]:
    """`gateways(env, *extra, port=None)`: a real gateway process (`arena gateway`) started by
    the harness with this environment, live when returned; every one started is stopped at the
    end of the test, whether it is still running, was stopped, or was killed (`kill()`)."""
    started: list[ManagedProcess] = []

    def start(env: dict[str, str], *extra: str, port: int | None = None) -> ManagedProcess:
        proc = start_gateway(*extra, env=env, port=port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=10)
