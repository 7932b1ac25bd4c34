"""`arena models`: the catalogue, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from shared.catalogue import Catalogue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    if args.json:
        print(json.dumps({key: spec.model_dump(mode="json") for key, spec in catalogue.models.items()}, indent=2))
        return 0
    rows = [("KEY", "NAME", "SOURCE", "N_CTX", "SLOTS", "PORT", "INSTANCES")]
    for spec in catalogue.models.values():
        rows.append((spec.key, spec.display_name, str(spec.source), str(spec.n_ctx), str(spec.parallel),
                     str(spec.port), str(spec.instances)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
