"""Health of the gateway, status page, shields.io badges and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import HTMLResponse, JSONResponse, Response

from gateway.auth import admin_view
from gateway.fleet_status import BADGE_CACHE_CONTROL
from gateway.status_page import CONTENT_SECURITY_POLICY as STATUS_PAGE_CSP
from gateway.status_page import render_status_fragment, render_status_page
from shared.errors import ApiError
from shared.openapi import METRICS_RESPONSES

router = APIRouter()
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/health/live")
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Ready when at least one model has a ready instance (for a load balancer in front)."""
    ready = request.app.state.instances.ready_models()
    body = {"status": "ok" if ready else "unavailable", "ready_models": ready}
    return JSONResponse(body, status_code=200 if ready else 503, headers=_NO_STORE)


@router.get("/api/status")
async def status_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.fleet_status.snapshot(show_urls=await admin_view(request)), headers=_NO_STORE)


@router.get("/status", response_class=HTMLResponse)
async def status_page(request: Request) -> HTMLResponse:
    try:
        page = render_status_page(request.app.state.fleet_status.snapshot())
    except OSError:
        raise ApiError(500, "The status page's shell is missing from this install.", code="missing_asset") from None
    return HTMLResponse(page, headers={**_NO_STORE, "Content-Security-Policy": STATUS_PAGE_CSP})


@router.get("/status/fragment")
async def status_fragment(request: Request) -> JSONResponse:
    """The status page's rows, rendered by the server, for its script to swap in."""
    return JSONResponse(render_status_fragment(request.app.state.fleet_status.snapshot()), headers=_NO_STORE)


@router.get("/api/badge/system")
async def system_badge(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.fleet_status.system_badge(),
                        headers={"Cache-Control": BADGE_CACHE_CONTROL})


@router.get("/api/badge/model/{key}")
async def model_badge(key: str, request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.fleet_status.model_badge(key),
                        headers={"Cache-Control": BADGE_CACHE_CONTROL})


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSES)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)
