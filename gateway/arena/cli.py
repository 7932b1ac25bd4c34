"""`arena leaderboard`: print the leaderboard from the store, as the page shows it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.arena.categories import CATEGORIES, OVERALL
from gateway.store.cli import StartupError, add_database_argument, open_database
from shared.catalogue import Catalogue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_argument(parser)
    parser.add_argument("--category", choices=[OVERALL, *CATEGORIES], default=OVERALL,
                        help="the board of one category (default: overall)")
    parser.add_argument("--style-control", action="store_true",
                        help="ratings at equal answer length and Markdown (FastChat's style control)")
    parser.add_argument("--json", action="store_true", help="the whole leaderboard as JSON, as /api/leaderboard")
    parser.add_argument("--rounds", type=int, default=None, help="bootstrap resamples (default: the arena's setting)")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(board: dict, category: str, style_control: bool) -> str:
    b = board["categories"][category]
    rows = [{**m, **m["style_controlled"]} if style_control else m for m in b["models"]]
    rows.sort(key=lambda m: (m["rank"], -m["rating"]))
    header = ("rank", "model", "rating", "95% CI", "battles", "win rate", "median tok/s")
    table = [header] + [(
        str(m["rank"]), m["model"], _fmt(m["rating"]),
        "-" if m["ci_low"] is None else f"{m['ci_low']:.0f} to {m['ci_high']:.0f}",
        str(m["battles"]), "-" if m["win_rate"] is None else f"{m['win_rate'] * 100:.0f}%",
        _fmt(m["median_tokens_per_second"], 1)) for m in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    excluded = ", ".join(f"{n} {why}" for why, n in sorted(board["excluded"].items())) or "none"
    title = f"{category}{' (style controlled)' if style_control else ''}: {b['battles']} counted battles " \
            f"of {board['votes']} votes; left out: {excluded}"
    return "\n".join([title, *lines])


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    try:
        print(asyncio.run(_board_text(args, catalogue)))
    except StartupError as exc:
        print(f"arena leaderboard: {exc}", file=sys.stderr)
        return 2
    return 0


async def _board_text(args: argparse.Namespace, catalogue: Catalogue) -> str:
    from gateway.arena.identity import IdentityFlagger
    from gateway.arena.leaderboard import build_leaderboard
    from gateway.arena.settings import ArenaSettings
    from gateway.arena.votes import VoteStore

    settings = ArenaSettings()
    async with open_database(args, catalogue) as db:
        votes = [v async for v in VoteStore(db).votes()]
    board = build_leaderboard(votes, {k: m.display_name for k, m in catalogue.models.items()},
                              flagger=IdentityFlagger.from_catalogue(catalogue),
                              rounds=args.rounds or settings.bootstrap_rounds)
    return json.dumps(board, indent=2) if args.json else render_table(board, args.category, args.style_control)
