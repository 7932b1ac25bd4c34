"""`arena catalogue export [FILE]`: the effective catalogue (the catalogue file plus the runtime
overlay kept in the gateway's store) as YAML, the same text as the admin page's download."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.store.cli import StartupError, add_database_argument, open_database
from shared.catalogue import Catalogue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="catalogue_command", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write the effective catalogue as YAML (to a file or stdout)")
    add_database_argument(export)
    export.add_argument("file", nargs="?", help="default: stdout")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    try:
        text = asyncio.run(_export(args, catalogue))
    except StartupError as exc:
        print(f"arena catalogue: {exc}", file=sys.stderr)
        return 2
    if args.file:
        Path(args.file).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


async def _export(args: argparse.Namespace, catalogue: Catalogue) -> str:
    from gateway.admin.catalogue_overlay import CatalogueOverlay

    async with open_database(args, catalogue) as db:
        overlay = CatalogueOverlay(catalogue.without_overlay(), db)  # the store holds the overlay
        await overlay.load()
        for key, why in overlay.skipped.items():
            print(f"arena catalogue: {key} left out of the overlay: {why}", file=sys.stderr)
        return overlay.export_yaml()
