"""`arena leaderboard` prints the leaderboard from the store."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.arena.synthetic_votes import _fill
from tests.harness import PROJECT_ROOT


async def test_arena_leaderboard_prints_the_table_from_the_store(tmp_path):
    await _fill(tmp_path / "gateway.sqlite3")
    env = {**os.environ, "ARENA_FLEET__DATA_DIR": str(tmp_path)}
    arena = [sys.executable, "-m", "shared.cli"]  # the `arena` command
    out = subprocess.run([*arena, "leaderboard"], capture_output=True, text=True, env=env, timeout=120,
                         cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("overall: 90 counted battles of 91 votes; left out: 1 identity")
    assert lines[1].split()[:3] == ["rank", "model", "rating"]
    assert [line.split()[1] for line in lines[2:]] == ["verbose", "middle", "terse"]
    styled = subprocess.run([*arena, "leaderboard", "--style-control", "--category", "math"],
                            capture_output=True, text=True, env=env, timeout=120, cwd=PROJECT_ROOT).stdout
    assert styled.startswith("math (style controlled): ")
