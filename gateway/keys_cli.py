"""`arena keys create|list|revoke`: the gateway's API keys, in its store (ARENA_DATABASE_URL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from gateway.store.cli import add_database_argument, open_database
from shared.catalogue import Catalogue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_argument(parser)
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (default: the gateway's)")
    create.add_argument("--json", action="store_true")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    return asyncio.run(_run(args, catalogue))


async def _run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    from gateway.keys import ApiKeyStore

    async with open_database(args, catalogue) as db:
        return await _command(args, ApiKeyStore(db))


async def _command(args: argparse.Namespace, store) -> int:
    if args.keys_command == "create":
        if args.rpm is not None and args.rpm < 0:
            print("--rpm must be 0 or more")
            return 2
        key, secret = await store.create(args.name, args.rpm)
        if args.json:
            print(json.dumps({**key.public(), "key": secret}))
        else:
            print(f"created {key.key_id} ({key.name}); the key, shown only now:\n{secret}")
        return 0
    if args.keys_command == "list":
        keys = await store.list()
        if args.json:
            print(json.dumps([k.public() for k in keys]))
            return 0
        rows = [("ID", "NAME", "PREFIX", "RPM", "CREATED", "STATE")]
        for k in keys:
            rows.append((k.key_id, k.name, k.prefix + "…", "default" if k.rpm is None else str(k.rpm),
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at)),
                         "active" if k.revoked_at is None else "revoked"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        return 0
    if await store.revoke(args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active key {args.key_id}")
    return 1
