"""Fixtures every test package may use: a real PostgreSQL cluster and a store on SQLite and PostgreSQL."""

from tests.postgres import database, database_url, postgres  # noqa: F401 (fixtures)
