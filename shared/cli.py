"""The `arena` command line: it composes the commands each package owns, and owns none itself.

A command's module provides ``add_arguments(parser)`` and ``run(args, catalogue) -> int``; it is
imported only when its command runs or help is asked for, so `arena models` never loads
llama.cpp. The catalogue is loaded here, once (``--catalogue PATH``, else ``ARENA_CATALOGUE``,
else the checkout's or the installed package's ``catalogue.yaml``), and passed to the command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from shared.catalogue import CatalogueError, load_catalogue

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("services.cli", "serve one model as an OpenAI-compatible service"),
    "gateway": ("gateway.cli", "run the gateway: routing, arena UI, status, metrics"),
    "up": ("shared.local_fleet", "start the local fleet (gateway plus embedded models)"),
    "models": ("shared.models_cli", "list the models of the catalogue"),
    "bench": ("shared.bench_cli", "benchmark a model service and the gateway's overhead"),
    "keys": ("gateway.keys_cli", "create, list and revoke the gateway's API keys"),
    "catalogue": ("gateway.admin.catalogue_cli", "the effective catalogue: the file plus the runtime overlay in the store"),
    "db": ("gateway.store.cli", "the gateway's store: upgrade the schema, export or import all data"),
    "leaderboard": ("gateway.arena.cli", "print the arena's leaderboard from the store"),
    "runner": ("scripts.runner_agent", "run one model instance on a CI runner, with handoff"),
}

def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Serverless LLM Arena")
    parser.add_argument("--catalogue", type=Path, metavar="PATH",
                        help="the catalogue file (default: ARENA_CATALOGUE, else the bundled config/catalogue.yaml)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The subcommand in `argv`, skipping the global options (and `--catalogue`'s value)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--catalogue":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command being run (all of them for top-level help).
    command = _command_name(argv)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        catalogue = load_catalogue(args.catalogue)
    except CatalogueError as exc:
        print(f"arena: {exc}", file=sys.stderr)
        return 2
    return int(args._module.run(args, catalogue) or 0)


if __name__ == "__main__":
    sys.exit(main())
