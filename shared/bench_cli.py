"""`arena bench`: composed of parts, each owned by its package: the model service's throughput
(`services.bench`), the gateway's overhead (`gateway.overhead_bench`), how the local fleet shares
the cores (`services.bench_cores`), multi-turn conversations with the prompt cache and prefix
affinity off and on (`services.bench_conversations`), the whole fleet under a mixed load at
rising concurrency (`services.bench_fleet`), councils of three through the fleet
(`gateway.modes.bench`), `n` > 1 choices against one (`services.choices_bench`), the
gateway's overload buffer (`gateway.overload_bench`), the forced tool-call stream parser
(`services.tool_stream_bench`) and the event loop while large bodies are parsed
(`services.big_body_bench`). Each part starts the processes it
measures. A part provides ``add_arguments(parser)`` and
``measure(args, catalogue) -> dict`` (which prints its own report)."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from shared.catalogue import Catalogue

# `arena bench --mode PART`: part -> module
BENCH_PARTS: dict[str, str] = {"service": "services.bench", "gateway": "gateway.overhead_bench",
                               "cores": "services.bench_cores", "conversations": "services.bench_conversations",
                               "fleet": "services.bench_fleet", "modes": "gateway.modes.bench",
                               "choices": "services.choices_bench", "overload": "gateway.overload_bench",
                               "toolstream": "services.tool_stream_bench", "bigbody": "services.big_body_bench"}


def _parts(text: str) -> set[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - {*BENCH_PARTS, "all"}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(sorted(unknown)) or text!r}; "
                                         f"known: all, {', '.join(BENCH_PARTS)}")
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`arena bench`: the parts' own options, plus which parts to run and where to write."""
    parser.add_argument("--mode", default="all", type=_parts,
                        help=f"all (default), or some of {', '.join(BENCH_PARTS)} separated by commas")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    for module in BENCH_PARTS.values():
        importlib.import_module(module).add_arguments(parser)


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    results = {part: importlib.import_module(BENCH_PARTS[part]).measure(args, catalogue)
               for part in BENCH_PARTS if "all" in args.mode or part in args.mode}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0
