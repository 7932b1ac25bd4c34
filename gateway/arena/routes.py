"""HTTP routes of the arena. Thin: the logic is in battles, votes, ratings and leaderboard.

Pages: `/` (compare and battle) and `/leaderboard`, plain HTML + ES modules from
`/static/arena/`, with a strict Content-Security-Policy (no inline script, nothing from another
origin) as a second wall behind the sanitizer. APIs: `/api/arena/models`, `/api/battles*`,
`/api/leaderboard`, `/api/votes.jsonl`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.admin import record_admin_action
from gateway.arena.activity import BattleActivity
from gateway.arena.battles import SIDE_LABELS, BattleManager, BattleRequest, FollowUpRequest, RegenerateRequest
from gateway.arena.clients import ClientIdentifier, ClientLimits
from gateway.arena.identity import IdentityFlagger
from gateway.arena.leaderboard import build_leaderboard
from gateway.arena.method_page import render_method_page
from gateway.page_shell import render_page, render_template
from gateway.arena.settings import ArenaSettings
from gateway.arena.shares import CompareShareRequest, ShareBook
from gateway.arena.votes import SIDES, Vote, VoteStore
from gateway.instances import InstanceState
from gateway.keys import RateLimiter
from gateway.static_assets import PageAssets
from gateway.store import Database
from gateway.upstream import RelayResponse
from shared.catalogue import Catalogue
from shared.csp import CONTENT_SECURITY_POLICY
from shared.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

# Model output is rendered as HTML (after DOMPurify); the Content-Security-Policy (shared.csp)
# is the second wall: no inline script or handler runs, and nothing loads from another origin.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
BATTLE_TOKEN_HEADER = "x-battle-token"


class Arena:
    """The arena's state on the app: its store, battle manager and leaderboard cache."""

    def __init__(self, catalogue: Catalogue, settings: ArenaSettings, database: Database,
                 activity: BattleActivity | None = None, serving: Any = None) -> None:
        self.catalogue = catalogue
        self.settings = settings
        self.store = VoteStore(database)
        self.flagger = IdentityFlagger.from_catalogue(catalogue)
        self.clients = ClientIdentifier(catalogue.arena.trusted_proxies)
        self.limits = ClientLimits(catalogue.arena, RateLimiter(database))
        self.battles = BattleManager(
            self.store, weights={k: m.battle_weight for k, m in catalogue.models.items()},
            known_names=[n for m in catalogue.models.values() for n in (m.key, m.display_name)],
            activity=activity, policy=catalogue.arena, serving=serving)
        self.shares = ShareBook(self.store, lambda: self.catalogue)
        self._leaderboard: tuple[Any, dict[str, Any]] | None = None
        self._leaderboard_lock = asyncio.Lock()
        self._leaderboard_checked = float("-inf")

    def display_names(self) -> dict[str, str]:
        return {k: m.display_name for k, m in self.catalogue.models.items()}

    async def leaderboard(self) -> dict[str, Any]:
        """The leaderboard, rebuilt when votes or exclusions changed. A rebuild (seconds with
        thousands of votes: a bootstrap per board) happens at most every `leaderboard_max_age`
        seconds, and while one runs the previous board is served rather than waited for."""
        fresh = time.monotonic() - self._leaderboard_checked < self.settings.leaderboard_max_age
        if self._leaderboard is not None and (fresh or self._leaderboard_lock.locked()):
            return self._leaderboard[1]
        async with self._leaderboard_lock:
            self._leaderboard_checked = time.monotonic()
            version = (await self.store.vote_count(), await self.store.exclusions_version())
            if self._leaderboard is None or self._leaderboard[0] != version:
                rows = [row async for row in self.store.vote_rows()]  # decoded in the worker thread
                excluded = await self.store.excluded_clients()
                board = await run_in_threadpool(
                    lambda: build_leaderboard([Vote.from_row(r) for r in rows], self.display_names(),
                                              flagger=self.flagger, excluded_clients=excluded,
                                              rounds=self.settings.bootstrap_rounds))
                self._leaderboard = (version, board)
            return self._leaderboard[1]


def arena_of(request: Request) -> Arena:
    arena = getattr(request.app.state, "arena", None)
    if arena is None:
        arena = request.app.state.arena = Arena(request.app.state.catalogue, ArenaSettings(), request.app.state.database,
                                                getattr(request.app.state, "battle_activity", None),
                                                serving_check(getattr(request.app.state, "instances", None)))
    return arena


def serving_check(instances: Any):
    """Whether a battle side's instance (or, before one answered, any instance of its model) is in
    service, as the health monitor sees it: a side whose instance it takes out fails at once."""
    if instances is None:
        return None

    def serving(model: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return bool(instances.ready(model))
        instance = instances.get(instance_id)
        # Draining still finishes what it has (a retiring or scaled-down instance): in service.
        return instance is not None and instance.state in (InstanceState.READY, InstanceState.DRAINING)

    return serving


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
    """A page template of web/templates/ (each extends the shared shell, gateway/page_shell.py)."""
    try:
        return HTMLResponse(render_template(name), headers=PAGE_HEADERS)
    except OSError:
        raise ApiError(500, f"The arena's page {name} is missing from this install.", code="missing_asset") from None


pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def index_page() -> HTMLResponse:
    return _page("index.html")


@pages.get("/leaderboard")
async def leaderboard_page() -> HTMLResponse:
    return _page("leaderboard.html")


@pages.get("/leaderboard/method")
async def leaderboard_method() -> HTMLResponse:
    """How the leaderboard is made: gateway/web/leaderboard-method.md (the README links to it), as a page."""
    try:
        return HTMLResponse(render_method_page(), headers=PAGE_HEADERS)
    except OSError:
        raise ApiError(500, "The leaderboard's method page is missing from this install.", code="missing_asset") from None


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
                     "max_tokens_limit": spec.max_tokens_limit if spec else None,
                     "context": spec.n_ctx if spec else None,
                     "battles": (spec.battle_weight if spec else 1.0) > 0})
    policy = arena.catalogue.arena
    return {"object": "list", "data": data, "answer_deadline": policy.answer_deadline,
            "max_prompt_chars": policy.max_prompt_chars}


def _battle_view(arena: Arena, battle) -> dict[str, Any]:
    """A battle as the browser may see it. Before the vote: the prompt, the requested settings,
    and each side's label, status and answer; nothing that tells the sides apart (no seed, no
    timings or token counts, not the max_tokens both models' limits cut it to). After the
    vote: everything, under `revealed`."""
    sides = {s: {"label": SIDE_LABELS[s], "status": r.status, "finish_reason": r.finish_reason,
                 "answer": r.answer, "error": r.error}
             for s, r in battle.sides.items()}
    settings = {k: battle.request[k] for k in ("system", "temperature")}
    settings["max_tokens"] = battle.request.get("requested_max_tokens", battle.request["max_tokens"])
    view = {"id": battle.id, "object": "arena.battle", "created": int(battle.created_at),
            "settings": settings, "prompt": battle.prompts[-1], "turn": battle.turn,
            "max_turns": arena.catalogue.arena.max_turns,
            "earlier_turns": [{"prompt": t.prompt, "answers": {s: r.answer for s, r in t.sides.items()}}
                              for t in battle.earlier],
            "sides": sides, "finished": battle.finished, "vote": battle.vote, "revealed": None,
            "regenerated": battle.request.get("regenerated", {}),
            "max_regenerations": arena.catalogue.arena.max_regenerations}
    if battle.vote is not None:
        view["revealed"] = arena.battles.reveal(battle, arena.display_names())
        view["settings"] |= {"max_tokens": battle.request["max_tokens"], "seed": battle.seed}
    return view


def _with_stream_urls(view: dict[str, Any]) -> dict[str, Any]:
    for s in SIDES:
        view["sides"][s]["stream_url"] = f"/api/battles/{view['id']}/sides/{s}/stream"
    return view


def _token(request: Request) -> str | None:
    return request.headers.get(BATTLE_TOKEN_HEADER)


@api.post("/api/battles", status_code=201)
async def create_battle(body: BattleRequest, request: Request) -> dict[str, Any]:
    """A new battle. The answer holds `token`: send it as X-Battle-Token to stream, follow up and vote."""
    arena = arena_of(request)
    client = arena.clients.client_id(request)
    await arena.limits.check("battle", client)
    limits = {k: m.max_tokens_limit for k, m in arena.catalogue.models.items()}
    battle, token = await arena.battles.create(ready_models(request), body, limits, client=client)
    return _with_stream_urls(_battle_view(arena, battle)) | {"token": token}


@api.post("/api/battles/{battle_id}/turns", status_code=201)
async def follow_up(battle_id: str, body: FollowUpRequest, request: Request) -> dict[str, Any]:
    """A follow-up question before the vote: both sides answer it in their own conversation."""
    arena = arena_of(request)
    battle = await arena.battles.follow_up(battle_id, _token(request), body.prompt)
    return _with_stream_urls(_battle_view(arena, battle))


@api.get("/api/battles/{battle_id}")
async def get_battle(battle_id: str, request: Request) -> dict[str, Any]:
    arena = arena_of(request)
    battle = await arena.battles.get(battle_id)
    return await _with_voted_answers(arena, _battle_view(arena, battle))


async def _with_voted_answers(arena: Arena, view: dict[str, Any]) -> dict[str, Any]:
    """A regenerated battle also shows the answers its vote applied to (they are in the vote)."""
    if view["vote"] is not None and view["regenerated"]:
        turns = await arena.store.voted_turns(view["id"]) or []
        if turns:
            view["voted_answers"] = {s: turns[-1].get(s, "") for s in SIDES}
    return view


@api.post("/api/battles/{battle_id}/rounds", status_code=201)
async def new_round(battle_id: str, request: Request) -> dict[str, Any]:
    """A new battle with this one's first prompt and settings, drawn again (another pair if the
    fleet has one), once this one is voted (or was no contest). Answers like `POST /api/battles`."""
    arena = arena_of(request)
    client = arena.clients.client_id(request)
    await arena.limits.check("battle", client)
    limits = {k: m.max_tokens_limit for k, m in arena.catalogue.models.items()}
    battle, token = await arena.battles.new_round(battle_id, _token(request), ready_models(request), limits,
                                                  client=client)
    return _with_stream_urls(_battle_view(arena, battle)) | {"token": token}


@api.post("/api/battles/{battle_id}/regenerate")
async def regenerate(battle_id: str, body: RegenerateRequest, request: Request) -> dict[str, Any]:
    """Ask sides of a voted battle again; stream them as before. The vote is not changed."""
    arena = arena_of(request)
    battle = await arena.battles.regenerate(battle_id, _token(request), body.sides)
    return _with_stream_urls(await _with_voted_answers(arena, _battle_view(arena, battle)))


@api.post("/api/battles/{battle_id}/share", status_code=201)
async def share_battle(battle_id: str, request: Request) -> dict[str, Any]:
    """A read-only link to the voted battle (409 battle_not_voted before the vote)."""
    arena = arena_of(request)
    battle = await arena.battles.get(battle_id)
    arena.battles.check_token(battle, _token(request))
    client = arena.clients.client_id(request)
    await arena.limits.check("share", client)
    return await arena.shares.share_battle(battle, client=client)


@api.post("/api/shares", status_code=201)
async def share_compare(body: CompareShareRequest, request: Request) -> dict[str, Any]:
    """A read-only link to a compare conversation, from the snapshot the page sends."""
    arena = arena_of(request)
    client = arena.clients.client_id(request)
    await arena.limits.check("share", client)
    return await arena.shares.share_compare(body, client=client)


@api.post("/api/battles/{battle_id}/sides/{side}/stream")
async def stream_side(battle_id: str, side: str, request: Request) -> StreamingResponse:
    """The side's answer as OpenAI chat-completion chunks named "Model A"/"Model B"."""
    arena = arena_of(request)
    upstream = getattr(request.app.state, "upstream", None)
    if upstream is None:
        raise ApiError(503, "The gateway cannot reach model instances yet.", code="not_ready")
    stream = await arena.battles.open_side(battle_id, side, functools.partial(upstream.stream_chat, private=True),
                                           _token(request))
    # RelayResponse closes the stream however the response ends, even before its first chunk.
    return RelayResponse(stream, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@api.post("/api/battles/{battle_id}/vote")
async def vote(battle_id: str, body: VoteRequest, request: Request) -> dict[str, Any]:
    arena = arena_of(request)
    client = arena.clients.client_id(request)
    await arena.limits.check("vote", client)
    stored, battle = await arena.battles.vote(battle_id, _token(request), body.winner, client)
    named = arena.flagger.words_in(*(answer for t in stored.turns or [] for answer in (t["a"], t["b"])))
    return {"object": "arena.vote", "id": stored.id, "battle_id": battle_id, "winner": stored.winner,
            "categories": stored.categories,
            # Recorded either way; an answer that named a model keeps the vote out of the ratings.
            "counted": not named, "identity_words": named,
            "revealed": arena.battles.reveal(battle, arena.display_names())}


public_api = APIRouter(tags=["arena"])
admin = APIRouter(tags=["arena admin"])


class ExcludeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=500)


@admin.get("/api/admin/arena/clients")
async def arena_clients(request: Request, limit: int = Query(100, ge=1, le=1000),
                        offset: int = Query(0, ge=0, le=1_000_000)) -> dict[str, Any]:
    """Who votes how much: per client, votes in the last hour and in all, flood flag, exclusion;
    the most active first, a page of `limit` from `offset` (`has_more`: another page follows)."""
    arena = arena_of(request)
    threshold = arena.catalogue.arena.flood_votes_per_hour
    clients = await arena.store.client_activity(since=time.time() - 3600, limit=limit + 1, offset=offset)
    for c in clients:
        c["flood"] = c["votes_recent"] > threshold
    return {"object": "list", "flood_votes_per_hour": threshold, "data": clients[:limit],
            "has_more": len(clients) > limit}


@admin.post("/api/admin/arena/excluded-clients", status_code=201)
async def exclude_client(body: ExcludeRequest, request: Request) -> dict[str, Any]:
    """Leave every vote of a client out of the ratings (they stay recorded)."""
    await arena_of(request).store.exclude_client(body.client, body.reason)
    await record_admin_action(request, "arena.exclude_client", body.client, {"reason": body.reason})
    return {"object": "arena.excluded_client", "client": body.client, "excluded": True}


@admin.delete("/api/admin/arena/excluded-clients/{client:path}")
async def include_client(client: str, request: Request) -> dict[str, Any]:
    if not await arena_of(request).store.include_client(client):
        raise ApiError(404, f"The client {client!r} is not excluded.", code="client_not_excluded")
    await record_admin_action(request, "arena.include_client", client)
    return {"object": "arena.excluded_client", "client": client, "excluded": False}


@public_api.get("/api/shares/{share_id}")
async def get_share(share_id: str, request: Request) -> dict[str, Any]:
    """A shared battle (revealed) or compare conversation: no voter, no token, no client."""
    arena = arena_of(request)
    share = await arena.shares.get(share_id)
    if share["kind"] == "battle":
        battle = await arena.battles.get(share["battle_id"])
        share["battle"] = await _with_voted_answers(arena, _battle_view(arena, battle))
    return share


_SHARE_MAIN = """    <section class="view" id="shared" aria-labelledby="shared-title">
      <h1 class="shared-title" id="shared-title">Shared from the arena</h1>
      <p class="intro" id="shared-summary" role="status">Loading…</p>
      <div class="panels" id="shared-panels"></div>
      <p class="intro"><a href="/">Try your own prompt in the arena</a></p>
    </section>"""
_SHARE_SCRIPT = '  <script type="module" src="/static/arena/js/share.js"></script>\n'


@pages.get("/share/{share_id}")
async def share_page(share_id: str) -> HTMLResponse:
    """The read-only page of a share, in the server pages' shell; share.js fills it in."""
    try:
        return HTMLResponse(render_page("Shared", "share", _SHARE_MAIN, head=_SHARE_SCRIPT), headers=PAGE_HEADERS)
    except OSError:
        raise ApiError(500, "The arena's page shell is missing from this install.", code="missing_asset") from None


@public_api.get("/api/leaderboard")
async def leaderboard(request: Request) -> JSONResponse:
    return JSONResponse(await arena_of(request).leaderboard())


@api.get("/api/votes.jsonl", response_class=StreamingResponse,
         responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
async def export_votes(request: Request) -> StreamingResponse:
    store = arena_of(request).store

    async def lines():
        async for v in store.votes():
            row = v.to_dict()
            row.pop("client")  # an address or key id: for the admin, not for the export
            yield json.dumps(row, ensure_ascii=False) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="votes.jsonl"'})


def install(app: FastAPI) -> None:
    from gateway import auth

    # Live load figures in /api/status and /metrics stay hidden while a battle side streams.
    activity = app.state.battle_activity = BattleActivity()
    if (status := getattr(app.state, "fleet_status", None)) is not None:
        status.live_load_hidden = activity.hides_live_load
    if (metrics := getattr(app.state, "metrics", None)) is not None:
        metrics.instance_collector.live_load_hidden = activity.hides_live_load
    app.include_router(pages)
    # Battles spend model time and the export holds users' prompts: they take the gateway's
    # API key when it requires one. The leaderboard itself is public.
    app.include_router(api, dependencies=_api_dependencies())
    app.include_router(public_api)
    app.include_router(admin, dependencies=[Depends(auth.require_admin)])
    app.mount("/static/arena", PageAssets(directory=WEB_DIR, check_dir=False), name="arena-static")
