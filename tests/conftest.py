"""Fixtures every test package may use: a real PostgreSQL cluster and a store on SQLite and PostgreSQL.

Every gateway a test starts (in this process, or a child, which inherits the environment)
rebuilds its leaderboard on each request unless the test says otherwise: tests read a vote's
effect at once. The default spacing of rebuilds has its own test (tests/arena/test_leaderboard.py).
"""

import os

from tests.postgres import database, database_url, postgres  # noqa: F401 (fixtures)

os.environ.setdefault("ARENA_UI_LEADERBOARD_MAX_AGE", "0")
