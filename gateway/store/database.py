"""`Database`: the async engine behind every repository, its migrations, and its failures."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.errors import ApiError

log = logging.getLogger("gateway.store")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 7_211_420_601  # pg_advisory_lock key: one gateway migrates at a time
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


class DatabaseUnavailable(Exception):
    """The database cannot be reached (down, unreachable, refused): the caller answers 503."""

    def api_error(self) -> ApiError:
        return ApiError(503, "The gateway's database is unavailable; retry shortly.", code="database_unavailable",
                        headers={"Retry-After": "2"})


def redact(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def async_url(url: str) -> URL:
    """`postgresql://...` and `sqlite:///...` as the async drivers' URLs; other schemes refused."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL: {redact(url)}") from None
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database {backend!r} in {redact(url)}: use sqlite:/// or postgresql://")
    return parsed.set(drivername=_DRIVERS[backend])


def is_unavailable(exc: BaseException) -> bool:
    """True for failures that mean "the database is not there" rather than a bad query."""
    if isinstance(exc, DatabaseUnavailable | OSError | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    name = type(getattr(exc, "orig", None) or exc).__name__
    return name in {"CannotConnectNowError", "ConnectionDoesNotExistError", "InterfaceError",
                    "ConnectionFailureError", "AdminShutdownError", "TooManyConnectionsError"}


def is_unique_violation(exc: BaseException) -> bool:
    """True for an INSERT refused by a UNIQUE or PRIMARY KEY constraint (SQLite or PostgreSQL)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(orig)


class Database:
    """One async engine; `read()` and `write()` give a connection in one transaction each.

    On SQLite (WAL, ``synchronous=FULL``, foreign keys on) a write transaction takes the write
    lock up front (``BEGIN IMMEDIATE``), so concurrent writers queue for `busy_timeout` instead
    of failing on a lock upgrade; readers never block. On PostgreSQL the pool checks each
    connection before use, so a restarted server is used again without a gateway restart.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0, connect_timeout: float = 5.0,
                 pool_size: int = 5) -> None:
        self.url = async_url(url)
        self.display_url = redact(self.url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                self.url, connect_args={"timeout": busy_timeout}, pool_pre_ping=True)
            _sqlite_transactions(self.engine, busy_timeout)
        else:
            self.engine = create_async_engine(
                self.url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size,
                pool_timeout=connect_timeout, connect_args={"timeout": connect_timeout, "command_timeout": 30})

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self._translate(exc) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise DatabaseUnavailable(f"database {self.display_url} unreachable: {exc}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(arena_write=True)
                async with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise self._translate(exc) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise DatabaseUnavailable(f"database {self.display_url} unreachable: {exc}") from exc

    def _translate(self, exc: SQLAlchemyError) -> Exception:
        if is_unavailable(exc):
            return DatabaseUnavailable(f"database {self.display_url} unavailable: {type(exc.__cause__ or exc).__name__}")
        return exc

    async def check(self) -> None:
        """Raise `DatabaseUnavailable` unless the database answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (Alembic); gateways starting together take turns.

        Alembic keeps its migration context in module globals, so one process migrates one
        database at a time; across processes PostgreSQL's advisory lock (or SQLite's write lock,
        taken by ``BEGIN IMMEDIATE``) makes the others wait.
        """
        async with _migration_lock():
            await self._upgrade(revision)

    async def _upgrade(self, revision: str) -> None:
        try:
            async with self.engine.connect() as conn:
                if not self.is_sqlite:
                    await conn.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})"))
                    await conn.commit()
                try:
                    await conn.execution_options(arena_write=True)
                    await conn.run_sync(_run_alembic, "upgrade", revision)
                    await conn.commit()
                finally:
                    if not self.is_sqlite:
                        await conn.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})"))
                        await conn.commit()
        except SQLAlchemyError as exc:
            raise self._translate(exc) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise DatabaseUnavailable(f"database {self.display_url} unreachable: {exc}") from exc

    async def current_revision(self) -> str | None:
        async with self.read() as conn:
            return await conn.run_sync(current_revision)

    async def dispose(self) -> None:
        await self.engine.dispose()


_MIGRATION_LOCKS: dict[int, asyncio.Lock] = {}


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(id(loop))
    if lock is None:
        _MIGRATION_LOCKS.clear()  # locks of loops that are gone (tests run one loop at a time)
        lock = _MIGRATION_LOCKS[id(loop)] = asyncio.Lock()
    return lock


def alembic_config(connection: Any = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _run_alembic(sync_conn: Any, command_name: str, revision: str) -> None:
    from alembic import command

    getattr(command, command_name)(alembic_config(sync_conn), revision)


def current_revision(sync_conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def _sqlite_transactions(engine: AsyncEngine, busy_timeout: float) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions; writes begin IMMEDIATE."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("arena_write") else "BEGIN")
