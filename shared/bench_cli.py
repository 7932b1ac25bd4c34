"""`arena bench`: composed of two parts, each owned by its package: the model service's
throughput (`services.bench`) and the gateway's overhead (`gateway.overhead_bench`). A part
provides ``add_arguments(parser)`` and ``measure(args, catalogue) -> dict``."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from shared.catalogue import Catalogue

# `arena bench --mode PART`: part -> module
BENCH_PARTS: dict[str, str] = {"service": "services.bench", "gateway": "gateway.overhead_bench"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`arena bench`: the parts' own options, plus which parts to run and where to write."""
    parser.add_argument("--mode", choices=[*BENCH_PARTS, "all"], default="all")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    for module in BENCH_PARTS.values():
        importlib.import_module(module).add_arguments(parser)


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    results = {part: importlib.import_module(BENCH_PARTS[part]).measure(args, catalogue)
               for part in BENCH_PARTS if args.mode in ("all", part)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0
