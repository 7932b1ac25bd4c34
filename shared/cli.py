"""The `arena` command line. Each subcommand lives in the package that owns it.

A subcommand's module provides ``add_arguments(parser)`` and ``run(args) -> int``; it is imported
only when its command runs or help is asked for, so `arena models` never loads llama.cpp.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("services.cli", "serve one model as an OpenAI-compatible service"),
    "gateway": ("gateway.cli", "run the gateway: routing, arena UI, status, metrics"),
    "up": ("shared.local_fleet", "start the local fleet (gateway plus embedded models)"),
    "models": ("shared.models_cli", "list the models of the catalogue"),
    "bench": ("services.bench", "benchmark a model service (and the gateway's overhead)"),
    "keys": ("gateway.keys_cli", "create, list and revoke the gateway's API keys"),
    "db": ("gateway.store.cli", "the gateway's store: upgrade the schema, export or import all data"),
    "runner": ("scripts.runner_agent", "run one model instance on a CI runner, with handoff"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Serverless LLM Arena")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command being run (all of them for top-level help).
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
