"""Everything the gateway keeps, in one database: SQLite by default, PostgreSQL for a fleet.

`ARENA_DATABASE_URL` picks the database: unset, an SQLite file in the data directory (no
server needed); ``postgresql://user:password@host/db``, PostgreSQL, which several gateways can
share. SQLAlchemy 2 Core on async drivers (aiosqlite, asyncpg): no call blocks the event loop.
The schema is versioned by Alembic (`gateway/store/migrations/`), applied when the gateway
starts and by `arena db upgrade`.

How a feature adds a table (the arena's votes and the API keys are the examples):

1. Declare the table in `gateway/store/schema.py` on the shared `metadata` (Core `Table`).
2. Add a migration in `gateway/store/migrations/versions/`: copy the newest file, set
   ``down_revision`` to the previous revision, and write `upgrade()` with ``op.create_table``
   (or ``op.add_column``). Never edit a migration that has been merged: add a new one.
   `tests/store/test_store.py` checks that the migrations build exactly `schema.py`.
3. Write a small repository class in the feature's own package that takes a `Database` and
   does its reads with ``async with db.read() as conn`` and its writes with
   ``async with db.write() as conn`` (one transaction each), e.g. `gateway.keys.ApiKeyStore`.
4. If `arena db export/import` should carry the table, list it in `transfer.TABLES`
   (parents before children).
5. Test the repository with the `database` fixture of `tests/store/conftest.py`: it runs
   each test on SQLite and on a real PostgreSQL.
"""

from gateway.store.database import Database, DatabaseUnavailable, redact

__all__ = ["Database", "DatabaseUnavailable", "redact"]
