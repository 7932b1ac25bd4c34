"""The arena: compare mode, blind battles with votes, and the leaderboard.

`attach_arena(app)` adds the arena's pages, static files and APIs to the gateway app. The
logic lives in plain classes (`battles.BattleManager`, `votes.VoteStore`, `ratings`), the
routes in `routes.py` only translate HTTP to calls on them.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["attach_arena"]


def attach_arena(app: FastAPI) -> None:
    """Add `/`, `/leaderboard`, `/static/arena/*` and the arena's `/api/*` routes to `app`."""
    from gateway.arena.routes import install

    install(app)
