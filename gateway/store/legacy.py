"""Votes kept by earlier versions in a separate `arena.sqlite3` are moved into the store once.

Before the store, battles and votes lived in `<data dir>/arena.sqlite3` and keys and
registrations in `gateway.sqlite3` (which the store's SQLite file still is, adopted by the
first migration). At start-up, an `arena.sqlite3` beside the store's SQLite file is copied into
the store (when the store has no votes yet) and renamed `arena.sqlite3.imported`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from gateway.store.database import Database
from gateway.store.schema import battle_sides, battles, votes

log = logging.getLogger("gateway.store")

LEGACY_VOTES_FILE = "arena.sqlite3"
_TABLES = (battles, battle_sides, votes)


def _read(path: Path) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t.name: [{k: row[k] for k in row.keys() if k in t.c} for row in db.execute(f"SELECT * FROM {t.name}")]
                for t in _TABLES if t.name in names}


async def import_legacy_votes(db: Database, data_dir: Path) -> int:
    """Copy an old `arena.sqlite3` into the store; the number of votes it brought."""
    path = data_dir / LEGACY_VOTES_FILE
    if not path.is_file():
        return 0
    async with db.read() as conn:
        if (await conn.execute(select(func.count()).select_from(votes))).scalar_one():
            log.warning("%s not imported: the store already has votes (import it with `arena db import`)", path)
            return 0
    rows = await asyncio.to_thread(_read, path)
    async with db.write() as conn:
        for table in _TABLES:
            if rows.get(table.name):
                await conn.execute(insert(table), rows[table.name])
    path.rename(path.with_name(LEGACY_VOTES_FILE + ".imported"))
    count = len(rows.get("votes", []))
    log.info("moved %d votes and %d battles from %s into the store", count, len(rows.get("battles", [])), path)
    return count
