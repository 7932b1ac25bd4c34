"""`arena bench [PART[,PART]]`: composed of parts, each owned by its package: the model
service's throughput (`services.bench`), the gateway's overhead (`gateway.overhead_bench`),
cores shared by the local fleet (`services.bench_cores`), multi-turn conversations with the
prompt cache and prefix affinity off and on (`services.bench_conversations`), and the fleet at
rising concurrency (`services.bench_fleet`). A part provides ``add_arguments(parser)`` and
``measure(args, catalogue) -> dict``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from shared.catalogue import Catalogue

# `arena bench --mode PART`: part -> module
BENCH_PARTS: dict[str, str] = {"service": "services.bench", "gateway": "gateway.overhead_bench",
                               "cores": "services.bench_cores", "conversations": "services.bench_conversations",
                               "fleet": "services.bench_fleet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`arena bench`: the parts' own options, plus which parts to run and where to write."""
    parser.add_argument("part", nargs="?", help=f"all (default), or some of {', '.join(BENCH_PARTS)} separated "
                                                "by commas")
    parser.add_argument("--mode", default="all", help="same as PART")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    for module in BENCH_PARTS.values():
        importlib.import_module(module).add_arguments(parser)


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    chosen = (args.part or args.mode).split(",")
    unknown = set(chosen) - {*BENCH_PARTS, "all"}
    if unknown:
        print(f"arena bench: unknown part {', '.join(sorted(unknown))}; known: all, {', '.join(BENCH_PARTS)}",
              file=sys.stderr)
        return 2
    results = {part: importlib.import_module(BENCH_PARTS[part]).measure(args, catalogue)
               for part in BENCH_PARTS if part in chosen or "all" in chosen}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0
