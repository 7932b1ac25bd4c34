"""`arena db export` / `arena db import`: every table as JSON lines, between any two stores.

The first line names the format and the schema revision; each other line is one row:
``{"table": "votes", "row": {...}}``, parents before children. An import goes into a store at
the same revision that holds no data yet, in one transaction: it loads all or nothing.
"""

from __future__ import annotations

import json
from typing import IO, Any

from sqlalchemy import Table, func, insert, select, text

from gateway.store.database import Database, current_revision
from gateway.store.schema import (admin_audit, analytics_hours, analytics_minutes, api_key_usage, api_keys,
                                   arena_excluded_clients, battle_sides, battle_turns, battles, catalogue_overlay,
                                   mode_transcripts, registrations, shares, votes)

FORMAT = "serverless-llm-arena-store"
# Everything a user made (the runtime catalogue overlay too) and the admin side's history (request
# analytics per minute and hour);
# rate windows (a minute's request counts) are not carried over.
TABLES: list[Table] = [api_keys, registrations, battles, battle_sides, battle_turns, votes, arena_excluded_clients,
                       mode_transcripts, api_key_usage, admin_audit, analytics_minutes, analytics_hours,
                       catalogue_overlay, shares]
_BATCH = 500


class ImportRefused(Exception):
    """The export cannot go into this store (bad file, other revision, data already there)."""


async def export_lines(db: Database, out: IO[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with db.read() as conn:
        revision = await conn.run_sync(current_revision)
        out.write(json.dumps({"format": FORMAT, "revision": revision}) + "\n")
        for table in TABLES:
            counts[table.name] = 0
            result = await conn.stream(select(table).order_by(*table.primary_key.columns))
            async for row in result:
                out.write(json.dumps({"table": table.name, "row": row._asdict()}, ensure_ascii=False) + "\n")
                counts[table.name] += 1
    return counts


async def import_lines(db: Database, source: IO[str]) -> dict[str, int]:
    header = _parse(source.readline(), 1)
    if header.get("format") != FORMAT:
        raise ImportRefused("not an export of `arena db export` (first line has no format header)")
    by_name = {t.name: t for t in TABLES}
    counts = {t.name: 0 for t in TABLES}
    async with db.write() as conn:
        revision = await conn.run_sync(current_revision)
        if header.get("revision") != revision:
            raise ImportRefused(f"the export is at schema revision {header.get('revision')!r}, this database at "
                                f"{revision!r}: run `arena db upgrade` on the older one, export again")
        for table in TABLES:
            if (await conn.execute(select(func.count()).select_from(table))).scalar_one():
                raise ImportRefused(f"the database already has {table.name}: import only into an empty store")
        batch: list[dict[str, Any]] = []
        current: Table | None = None
        for number, line in enumerate(source, start=2):
            if not line.strip():
                continue
            item = _parse(line, number)
            table = by_name.get(item.get("table"))
            row = item.get("row")
            if table is None or not isinstance(row, dict) or not set(row) <= set(table.c.keys()):
                raise ImportRefused(f"line {number}: not a row of a known table")
            if table is not current or len(batch) >= _BATCH:
                if batch:
                    await conn.execute(insert(current), batch)
                batch, current = [], table
            batch.append(row)
            counts[table.name] += 1
        if batch:
            await conn.execute(insert(current), batch)
        if not db.is_sqlite and counts["votes"]:
            await conn.execute(text("SELECT setval(pg_get_serial_sequence('votes', 'id'), "
                                    "(SELECT MAX(id) FROM votes))"))
    return counts


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        raise ImportRefused(f"line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise ImportRefused(f"line {number} is not a JSON object")
    return value
