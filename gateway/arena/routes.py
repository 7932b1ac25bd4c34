"""HTTP routes of the arena. Thin: the logic is in battles, votes, ratings and leaderboard.

Pages: `/` (compare and battle) and `/leaderboard`, plain HTML + ES modules from
`/static/arena/`, with a strict Content-Security-Policy (no inline script, nothing from another
origin) as a second wall behind the sanitizer. APIs: `/api/arena/models`, `/api/battles*`,
`/api/leaderboard`, `/api/votes.jsonl`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from gateway.arena.battles import SIDE_LABELS, BattleManager, BattleRequest
from gateway.arena.leaderboard import build_leaderboard
from gateway.arena.settings import ArenaSettings
from gateway.arena.votes import SIDES, VoteStore
from gateway.store import Database
from shared.catalogue import Catalogue
from shared.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

# Model output is rendered as HTML (after DOMPurify); this policy is the second wall: no
# inline script or handler runs, and nothing loads from another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
class Arena:
    """The arena's state on the app: its store, battle manager and leaderboard cache."""

    def __init__(self, catalogue: Catalogue, settings: ArenaSettings, database: Database) -> None:
        self.catalogue = catalogue
        self.settings = settings
        self.store = VoteStore(database)
        self.battles = BattleManager(
            self.store, weights={k: m.battle_weight for k, m in catalogue.models.items()},
            known_names=[n for m in catalogue.models.values() for n in (m.key, m.display_name)])
        self._leaderboard: tuple[int, dict[str, Any]] | None = None
        self._leaderboard_lock = asyncio.Lock()

    def display_names(self) -> dict[str, str]:
        return {k: m.display_name for k, m in self.catalogue.models.items()}

    async def leaderboard(self) -> dict[str, Any]:
        async with self._leaderboard_lock:
            count = await self.store.vote_count()
            if self._leaderboard is None or self._leaderboard[0] != count:
                votes = [vote async for vote in self.store.votes()]
                board = await run_in_threadpool(
                    lambda: build_leaderboard(votes, self.display_names(), rounds=self.settings.bootstrap_rounds))
                self._leaderboard = (board["votes"], board)
            return self._leaderboard[1]


def arena_of(request: Request) -> Arena:
    arena = getattr(request.app.state, "arena", None)
    if arena is None:
        arena = request.app.state.arena = Arena(request.app.state.catalogue, ArenaSettings(), request.app.state.database)
    return arena


def ready_models(request: Request) -> list[str]:
    instances = getattr(request.app.state, "instances", None)
    if instances is None:
        raise ApiError(503, "The gateway has no instance registry yet.", code="not_ready")
    return list(instances.ready_models())


def _api_dependencies() -> list[Any]:
    """The gateway's API-key check guards the arena's APIs too."""
    from gateway import auth

    return [Depends(auth.require_api_key)]


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    winner: Literal["model_a", "model_b", "tie", "both_bad"]


def _page(name: str) -> HTMLResponse:
    path = WEB_DIR / name
    try:
        return HTMLResponse(path.read_text(encoding="utf-8"), headers=PAGE_HEADERS)
    except OSError:
        raise ApiError(500, f"The arena's page {name} is missing from this install.", code="missing_asset") from None


pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def index_page() -> HTMLResponse:
    return _page("index.html")


@pages.get("/leaderboard")
async def leaderboard_page() -> HTMLResponse:
    return _page("leaderboard.html")


api = APIRouter(tags=["arena"])


@api.get("/api/arena/models")
async def list_ready_models(request: Request) -> dict[str, Any]:
    """Models with a ready instance, in catalogue order, with their display names."""
    arena = arena_of(request)
    ready = set(ready_models(request))
    order = list(arena.catalogue.models) + sorted(ready - set(arena.catalogue.models))
    data = []
    for key in order:
        if key not in ready:
            continue
        spec = arena.catalogue.models.get(key)
        data.append({"id": key, "object": "model", "display_name": spec.display_name if spec else key,
                     "description": spec.description if spec else "",
                     "max_tokens_limit": spec.max_tokens_limit if spec else None})
    return {"object": "list", "data": data}


def _battle_view(arena: Arena, battle) -> dict[str, Any]:
    sides = {s: {"label": SIDE_LABELS[s], "status": r.status, "ttft": r.ttft, "total": r.total,
                 "tokens": r.tokens, "tokens_per_second": r.tokens_per_second}
             for s, r in battle.sides.items()}
    view = {"id": battle.id, "object": "arena.battle", "created": int(battle.created_at),
            "settings": {k: battle.request[k] for k in ("system", "temperature", "max_tokens")} | {"seed": battle.seed},
            "prompt": battle.request["prompt"], "sides": sides, "finished": battle.finished, "vote": battle.vote,
            "revealed": None}
    if battle.vote is not None:
        view["revealed"] = arena.battles.reveal(battle, arena.display_names())
    return view


@api.post("/api/battles", status_code=201)
async def create_battle(body: BattleRequest, request: Request) -> dict[str, Any]:
    arena = arena_of(request)
    limits = {k: m.max_tokens_limit for k, m in arena.catalogue.models.items()}
    battle = await arena.battles.create(ready_models(request), body, limits)
    view = _battle_view(arena, battle)
    for s in SIDES:
        view["sides"][s]["stream_url"] = f"/api/battles/{battle.id}/sides/{s}/stream"
    return view


@api.get("/api/battles/{battle_id}")
async def get_battle(battle_id: str, request: Request) -> dict[str, Any]:
    arena = arena_of(request)
    battle = await arena.store.get_battle(battle_id)
    return _battle_view(arena, battle)


@api.post("/api/battles/{battle_id}/sides/{side}/stream")
async def stream_side(battle_id: str, side: str, request: Request) -> StreamingResponse:
    """The side's answer as OpenAI chat-completion chunks named "Model A"/"Model B"."""
    arena = arena_of(request)
    upstream = getattr(request.app.state, "upstream", None)
    if upstream is None:
        raise ApiError(503, "The gateway cannot reach model instances yet.", code="not_ready")
    stream = await arena.battles.open_side(battle_id, side, upstream.stream_chat)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@api.post("/api/battles/{battle_id}/vote")
async def vote(battle_id: str, body: VoteRequest, request: Request) -> dict[str, Any]:
    arena = arena_of(request)
    stored = await arena.store.record_vote(battle_id, body.winner)
    battle = await arena.store.get_battle(battle_id)
    return {"object": "arena.vote", "id": stored.id, "battle_id": battle_id, "winner": stored.winner,
            "revealed": arena.battles.reveal(battle, arena.display_names())}


public_api = APIRouter(tags=["arena"])


@public_api.get("/api/leaderboard")
async def leaderboard(request: Request) -> JSONResponse:
    return JSONResponse(await arena_of(request).leaderboard())


@api.get("/api/votes.jsonl")
async def export_votes(request: Request) -> StreamingResponse:
    store = arena_of(request).store

    async def lines():
        async for v in store.votes():
            yield json.dumps(v.to_dict(), ensure_ascii=False) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="votes.jsonl"'})


def install(app: FastAPI) -> None:
    app.include_router(pages)
    # Battles spend model time and the export holds users' prompts: they take the gateway's
    # API key when it requires one. The leaderboard itself is public.
    app.include_router(api, dependencies=_api_dependencies())
    app.include_router(public_api)
    app.mount("/static/arena", StaticFiles(directory=WEB_DIR, check_dir=False), name="arena-static")
