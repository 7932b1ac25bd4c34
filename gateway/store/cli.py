"""`arena db upgrade|export|import|current`: the gateway's store from the command line.

The database is the gateway's (``ARENA_DATABASE_URL``, else the SQLite file
``ARENA_GATEWAY_DB_PATH``), or the one given with ``--database-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from shared.catalogue import Catalogue
from gateway.store.database import Database, DatabaseUnavailable, redact, sqlite_url


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", metavar="URL",
                        help="sqlite:///path or postgresql://user:password@host/db "
                             "(default: ARENA_DATABASE_URL, else the SQLite file ARENA_GATEWAY_DB_PATH)")
    parser.add_argument("--db", metavar="PATH", help="an SQLite file, instead of --database-url")


def database_url(args: argparse.Namespace, catalogue: Catalogue) -> str:
    if getattr(args, "database_url", None):
        return args.database_url
    if getattr(args, "db", None):
        return sqlite_url(args.db)
    from gateway.settings import GatewaySettings

    return GatewaySettings.for_catalogue(catalogue).store_url


class StartupError(Exception):
    """One line for the user: the database cannot be used."""


async def open_checked(url: str) -> Database:
    """A migrated `Database` at `url`, or `StartupError` naming the URL without its password."""
    try:
        db = Database(url)
    except ValueError as exc:
        raise StartupError(f"bad ARENA_DATABASE_URL: {exc}") from None
    try:
        await db.upgrade()
    except DatabaseUnavailable as exc:
        await db.dispose()
        cause = exc.__cause__.__cause__ if exc.__cause__ is not None and exc.__cause__.__cause__ else exc.__cause__
        raise StartupError(f"cannot reach the database {redact(url)}: "
                           f"{_one_line(cause or exc)}") from None
    except Exception as exc:
        await db.dispose()
        raise StartupError(f"cannot use the database {redact(url)}: {_one_line(exc)}") from None
    return db


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@asynccontextmanager
async def open_database(args: argparse.Namespace, catalogue: Catalogue) -> AsyncIterator[Database]:
    db = await open_checked(database_url(args, catalogue))
    try:
        yield db
    finally:
        await db.dispose()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_argument(parser)
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    sub.add_parser("upgrade", help="apply the schema migrations (the gateway also does at start-up)")
    sub.add_parser("current", help="print the schema revision of the database")
    export = sub.add_parser("export", help="write every table as JSON lines (to a file or stdout)")
    export.add_argument("file", nargs="?", help="default: stdout")
    load = sub.add_parser("import", help="load an export into the database (which must hold no data yet)")
    load.add_argument("file", help="a file written by `arena db export` ('-' for stdin)")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    try:
        return asyncio.run(_run(args, catalogue))
    except StartupError as exc:
        print(f"arena db: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    from gateway.store import transfer

    async with open_database(args, catalogue) as db:
        if args.db_command == "upgrade":
            print(f"{db.display_url}: schema at revision {await db.current_revision()}")
            return 0
        if args.db_command == "current":
            print(await db.current_revision())
            return 0
        if args.db_command == "export":
            if args.file:
                with open(args.file, "w", encoding="utf-8") as out:
                    counts = await transfer.export_lines(db, out)
            else:
                counts = await transfer.export_lines(db, sys.stdout)
            print("exported " + ", ".join(f"{n} {t}" for t, n in counts.items()), file=sys.stderr)
            return 0
        try:
            if args.file == "-":
                counts = await transfer.import_lines(db, sys.stdin)
            else:
                with Path(args.file).open(encoding="utf-8") as source:
                    counts = await transfer.import_lines(db, source)
        except (OSError, transfer.ImportRefused) as exc:
            print(f"arena db import: {exc}", file=sys.stderr)
            return 1
        print("imported " + ", ".join(f"{n} {t}" for t, n in counts.items()), file=sys.stderr)
        return 0
