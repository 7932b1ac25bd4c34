"""HTTP of the modes. Thin: checks and runs are in `ModesService`.

Pages `/modes/discussion`, `/modes/council`, `/modes/roundtable` (a stored session opens with
`?t=<id>`); `POST /api/modes/{mode}` streams a session as Server-Sent Events;
`GET /api/modes/options` lists who can take part; `GET /api/modes/transcripts/{id}` returns a
stored session (`?download=1` as a file).

Running a session takes the gateway's API key when it requires one. Reading a stored session
does not, deliberately: its id (96 random bits) is the capability, like a share link, so the
page's permalink and "Export as JSON" work as plain links in any browser.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.arena.routes import _page
from gateway.modes.events import openapi_stream_response
from gateway.modes.manager import ModesService
from gateway.modes.session import MODES, ModeRequest
from gateway.modes.settings import EXTERNAL
from gateway.upstream import RelayResponse
from shared.errors import ApiError


def service_of(request: Request) -> ModesService:
    return request.app.state.modes


def client_of(request: Request) -> str:
    """Sessions are counted per API key when there is one, per client address otherwise (from
    X-Forwarded-For only behind the catalogue's trusted proxies, as the arena does)."""
    return service_of(request).clients.client_id(request)


pages = APIRouter(include_in_schema=False)


@pages.get("/modes/{mode}")
async def mode_page(mode: Literal["discussion", "council", "roundtable"]) -> HTMLResponse:
    return _page("modes.html")


def _dependencies() -> list[Any]:
    from gateway import auth

    return [Depends(auth.require_api_key)]


api = APIRouter(tags=["modes"])
public_api = APIRouter(tags=["modes"])


@api.get("/api/modes/options")
async def options(request: Request) -> dict[str, Any]:
    """Models that can take part now (with their profiles), orchestrators, and the bounds."""
    service = service_of(request)
    ready = set(service.ready_models())
    models = [{"id": key, "display_name": spec.display_name, "profile": spec.profile.model_dump(),
               "max_tokens_limit": spec.max_tokens_limit}
              for key, spec in service.catalogue.models.items() if key in ready]
    orchestrators = [{"id": m["id"], "name": m["display_name"], "kind": "fleet"} for m in models]
    if service.external is not None:
        orchestrators.append({"id": EXTERNAL, "name": f"External: {service.external.model}", "kind": EXTERNAL})
    s = service.settings
    return {"object": "arena.modes.options", "modes": list(MODES), "models": models, "orchestrators": orchestrators,
            "default_orchestrator": s.orchestrator or None,
            "limits": {"participants": [s.min_participants, s.max_participants], "max_rounds": s.max_rounds,
                       "max_tokens_per_turn": s.max_tokens_per_turn, "turn_timeout": s.turn_timeout,
                       "session_timeout": s.session_timeout, "sessions_per_client": s.sessions_per_client}}


@api.post("/api/modes/{mode}", responses=openapi_stream_response(), response_class=RelayResponse)
async def run_mode(mode: Literal["discussion", "council", "roundtable"], body: ModeRequest,
                   request: Request) -> RelayResponse:
    """Run a discussion, council or roundtable, streamed as it happens.

    The stream's events are typed (`turn_start`, `token`, `turn_end`, `evaluation`, `ranking`,
    `synthesis`, `error`, `done`); closing the connection stops every generation of the session.
    The session id is in the `X-Arena-Session` header and the `done` event.
    """
    service = service_of(request)
    session_id, stream = await service.open(mode, body, client_of(request))
    return RelayResponse(stream, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Arena-Session": session_id})


@public_api.get("/api/modes/transcripts/{transcript_id}")
async def transcript(transcript_id: str, request: Request, download: bool = False) -> JSONResponse:
    """A stored session: its settings, participants and every event but the tokens."""
    if not 8 <= len(transcript_id) <= 64:
        raise ApiError(404, "No such transcript.", code="transcript_not_found", param="transcript_id")
    body = await service_of(request).repository.get(transcript_id)
    if body is None:
        raise ApiError(404, "No such transcript.", code="transcript_not_found", param="transcript_id")
    headers = {"Cache-Control": "no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{body["mode"]}-{transcript_id}.json"'
    return JSONResponse(body, headers=headers)


def install(app, service: ModesService) -> None:
    app.state.modes = service
    app.include_router(pages)
    app.include_router(api, dependencies=_dependencies())
    app.include_router(public_api)
