"""`arena db upgrade|export|import` between SQLite and a real PostgreSQL, and start-up refusals."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys

from gateway.admin.analytics import HOUR, RequestAnalytics
from gateway.arena.votes import SideResult, VoteStore
from gateway.keys import ApiKeyStore
from gateway.metrics import RequestSample
from gateway.registration import Registration, RegistrationStore
from gateway.store import Database
from shared.cli import main
from tests.harness import PROJECT_ROOT


def arena(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `arena` command in a process of its own."""
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, input=stdin, env=env)


def arena_here(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The same command line, run in this process (each `arena` process spends seconds importing)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


async def fill(url: str) -> None:
    db = Database(url)
    await db.upgrade()
    try:
        await ApiKeyStore(db).create("tester", rpm=3)
        await RegistrationStore(db).upsert(Registration("r1", "smollm2-135m", "http://127.0.0.1:9", 30, 1.0, 31.0))
        votes = VoteStore(db)
        for n in range(3):
            await votes.create_battle(f"b{n}", "m1", "m2", n, {"prompt": f"Ünïcode {n}", "temperature": 0.5})
            for side in "ab":
                await votes.claim_side(f"b{n}", side)
                await votes.finish_side(f"b{n}", side, SideResult("done", f"answer {side}", ttft=0.25, tokens=4))
            if n < 2:
                await votes.record_vote(f"b{n}", "model_a")
        # The admin analytics: minutes of two models, the older ones rolled up into an hour.
        now = [10 * HOUR + 30.0]
        analytics = RequestAnalytics(db, clock=lambda: now[0])
        for n, at in enumerate((2 * HOUR + 5.0, 2 * HOUR + 65.0, now[0])):
            analytics.record(RequestSample(at=at, model=f"m{n % 2 + 1}", instance="i1", key_id=None, status=200,
                                           error=False, duration=0.5, ttft=0.1, queue=0.01, generation=0.4,
                                           prompt_tokens=7, completion_tokens=9 + n))
        await analytics.flush()
        await analytics.roll_up(minute_retention=HOUR, hour_retention=30 * 24 * HOUR)
    finally:
        await db.dispose()


def rows(export: str) -> list[dict]:
    return [json.loads(line) for line in export.splitlines()[1:]]


def test_export_import_moves_everything_both_ways(tmp_path, postgres):
    sqlite_url = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    pg_url = postgres.create_database()
    asyncio.run(fill(sqlite_url))
    exported = arena("db", "--database-url", sqlite_url, "export", str(tmp_path / "dump.jsonl"))
    assert exported.returncode == 0, exported.stderr
    assert "2 votes" in exported.stderr and "3 battles" in exported.stderr and "6 battle_sides" in exported.stderr
    assert "1 analytics_minutes" in exported.stderr and "2 analytics_hours" in exported.stderr
    dump = (tmp_path / "dump.jsonl").read_text()

    imported = arena_here("db", "--database-url", pg_url, "import", str(tmp_path / "dump.jsonl"))
    assert imported.returncode == 0, imported.stderr
    on_pg = arena_here("db", "--database-url", pg_url, "export")
    assert on_pg.returncode == 0 and rows(on_pg.stdout) == rows(dump)

    # New votes on PostgreSQL continue the imported numbering.
    async def vote_on_pg() -> int:
        db = Database(pg_url)
        try:
            return (await VoteStore(db).record_vote("b2", "tie")).id
        finally:
            await db.dispose()

    assert asyncio.run(vote_on_pg()) == 3

    # And back: PostgreSQL to a fresh SQLite file, from stdin.
    back_url = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    on_pg = arena_here("db", "--database-url", pg_url, "export").stdout
    assert arena_here("db", "--database-url", back_url, "import", "-", stdin=on_pg).returncode == 0
    back = arena_here("db", "--database-url", back_url, "export").stdout
    assert rows(back) == rows(on_pg) and len([r for r in rows(back) if r["table"] == "votes"]) == 3
    hours = [r["row"] for r in rows(back) if r["table"] == "analytics_hours"]
    assert sorted((h["model"], h["completion_tokens"]) for h in hours) == [("m1", 9), ("m2", 10)]

    # Into a store that has data: refused, nothing changed.
    again = arena_here("db", "--database-url", back_url, "import", str(tmp_path / "dump.jsonl"))
    assert again.returncode == 1 and "empty store" in again.stderr
    assert rows(arena_here("db", "--database-url", back_url, "export").stdout) == rows(back)


def test_bad_imports_are_refused_clearly(tmp_path):
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    (tmp_path / "bad.jsonl").write_text("not json\n")
    result = arena_here("db", "--database-url", url, "import", str(tmp_path / "bad.jsonl"))
    assert result.returncode == 1 and "not JSON" in result.stderr
    (tmp_path / "other.jsonl").write_text('{"format": "serverless-llm-arena-store", "revision": "0000"}\n')
    result = arena_here("db", "--database-url", url, "import", str(tmp_path / "other.jsonl"))
    assert result.returncode == 1 and "revision" in result.stderr
    result = arena_here("db", "--database-url", url, "import", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 1 and "missing.jsonl" in result.stderr


def test_an_unreachable_database_stops_start_up_with_one_line(tmp_path, postgres):
    url = f"postgresql://postgres:arena-test-pw@127.0.0.1:{postgres.port + 1 if postgres.port < 65535 else 1}/x"
    for command in (["db", "--database-url", url, "upgrade"], ["gateway", "--port", "0"]):
        env = {"PATH": "/usr/bin:/bin", "ARENA_DATABASE_URL": url, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false"}
        result = arena(*command, env=env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot reach the database" in lines[0], result.stderr
        assert "127.0.0.1" in lines[0] and "arena-test-pw" not in result.stderr + result.stdout
    bad = arena_here("db", "--database-url", "mysql://u:pw@h/x", "upgrade")
    assert bad.returncode == 2 and "unsupported" in bad.stderr and ":pw@" not in bad.stderr


def test_upgrade_reports_the_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    result = arena_here("db", "--database-url", url, "upgrade")
    assert result.returncode == 0 and "schema at revision" in result.stdout
    assert arena_here("db", "--database-url", url, "current").stdout.strip() == result.stdout.split()[-1]
