"""HTTP routes of the admin side. Thin: the logic is in `audit` and `analytics` (and, for the
models, `model_routes` over `catalogue_overlay` and `hub_downloads`).

Pages (`/admin`, `/admin/analytics`, `/admin/models`, `/admin/playground`) are static HTML with no data in them:
each asks for the admin key in a login form, keeps it in the tab's sessionStorage and sends it as
`Authorization: Bearer` to the `/api/admin/*` APIs, which all require it (`auth.require_admin`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup

from gateway.admin.analytics import RequestAnalytics
from gateway.admin.audit import AuditLog, fingerprint
from gateway.admin import model_routes
from gateway.admin.catalogue_overlay import CatalogueOverlay
from gateway.admin.hub_downloads import HubConfig, HubDownloads
from gateway.admin.settings import AdminSettings
from gateway.arena.routes import PAGE_HEADERS
from gateway.admin import record_admin_action
from gateway.auth import bearer_token, require_admin
from gateway.page_shell import render_template
from gateway.store.periodic import Periodic
from shared.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[1] / "web" / "admin"


@dataclass(frozen=True)
class Page:
    name: str       # its tab in the shell, and its fragment `<name>.part.html`
    title: str
    scripts: tuple[str, ...]  # classic scripts before the page's module `js/<name>.js`


PAGES = {"/admin": Page("keys", "API keys", ()),
         "/admin/analytics": Page("analytics", "Analytics", ("/static/arena/vendor/chart.umd.min.js",)),
         "/admin/models": Page("models", "Models", ()),
         "/admin/playground": Page("playground", "Playground", ()),
         "/admin/instances": Page("instances", "Instances", ())}


@dataclass
class Admin:
    settings: AdminSettings
    audit: AuditLog
    analytics: RequestAnalytics

    async def record(self, request: Request, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        """Write an admin action to the audit log, as done by the caller's admin key."""
        await self.audit.record(actor_of(request), action, target, detail)

    @staticmethod
    def actor(request: Request) -> str:
        return actor_of(request)

    async def maintain(self) -> None:
        now = time.time()
        await self.analytics.roll_up(minute_retention=self.settings.minute_retention_hours * 3600,
                                     hour_retention=self.settings.hour_retention_days * 86400)
        await self.audit.prune(now - self.settings.audit_retention_days * 86400)


def admin_of(request: Request) -> Admin:
    return request.app.state.admin


def actor_of(request: Request) -> str:
    token = bearer_token(request)
    return fingerprint(token) if token else "unknown"


pages = APIRouter(include_in_schema=False)


def render_page(page: Page) -> str:
    """The shared shell (header, login, admin-off notice) around the page's own fragment."""
    try:
        main = (WEB_DIR / f"{page.name}.part.html").read_text(encoding="utf-8")
        scripts = [f'  <script src="{src}"></script>' for src in page.scripts]
        scripts.append(f'  <script type="module" src="/static/admin/js/{page.name}.js"></script>')
        return render_template("shell.html", title=page.title, current=page.name,
                               head=Markup("\n".join(scripts)), main=Markup(main.rstrip("\n")))
    except OSError:
        raise ApiError(500, f"The admin page {page.name} is missing from this install.", code="missing_asset") from None


def _page_route(page: Page):
    async def serve() -> HTMLResponse:
        return HTMLResponse(render_page(page), headers=PAGE_HEADERS)
    return serve


for _path, _page in PAGES.items():
    pages.add_api_route(_path, _page_route(_page), methods=["GET"])


# Public: tells the login form whether the admin side is on (and how to turn it on), nothing more.
public = APIRouter(tags=["admin"])


@public.get("/api/admin/enabled")
async def admin_enabled(request: Request) -> dict[str, Any]:
    enabled = bool(request.app.state.settings.admin_key)
    return {"enabled": enabled,
            "message": None if enabled else "The admin side is off: start the gateway with "
                                            "ARENA_GATEWAY_ADMIN_KEY set to a long random secret."}


api = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@api.get("/session")
async def check_session(request: Request) -> dict[str, Any]:
    """The admin key is valid (the pages call this with the key kept in the tab)."""
    return {"object": "admin.session", "actor": actor_of(request)}


@api.post("/session")
async def log_in(request: Request) -> dict[str, Any]:
    """The login form: checks the key like GET, and writes the login to the audit log."""
    await record_admin_action(request, "login")
    return {"object": "admin.session", "actor": actor_of(request)}


@api.get("/audit")
async def audit_log(request: Request, limit: int = Query(100, ge=1, le=1000),
                    before: int | None = Query(None, ge=1)) -> dict[str, Any]:
    entries = await admin_of(request).audit.recent(limit, before)
    return {"object": "list", "data": [e.public() for e in entries]}


@api.get("/analytics")
async def analytics(request: Request, resolution: Literal["minute", "hour"] = "minute",
                    hours: float = Query(1.0, gt=0, le=24 * 3650),
                    by: Literal["model", "instance"] = "model") -> dict[str, Any]:
    """Requests, errors, tokens, tokens/s, TTFT and queue wait per period and model (or instance)."""
    admin = admin_of(request)
    if resolution == "minute" and hours > admin.settings.minute_retention_hours:
        raise ApiError(400, f"Minute points are kept {admin.settings.minute_retention_hours:g} hours; "
                            "ask for fewer hours or resolution=hour.", code="invalid_value", param="query.hours")
    if resolution == "hour" and hours > admin.settings.hour_retention_days * 24:
        raise ApiError(400, f"Hour points are kept {admin.settings.hour_retention_days:g} days; ask for fewer hours.",
                       code="invalid_value", param="query.hours")
    await admin.analytics.flush()
    return await admin.analytics.series(resolution, time.time() - hours * 3600, by=by)


@api.get("/analytics/arena")
async def arena_activity(request: Request, days: int = Query(14, ge=1, le=366)) -> dict[str, Any]:
    """Battles opened and votes cast per UTC day."""
    return await admin_of(request).analytics.arena_per_day(days)


def publish_catalogue(app: FastAPI):
    """The hook that makes the overlay's effective catalogue the one the gateway reads: its
    registry (known models, registrations), status page, model list, the arena's battles and the
    modes' models."""
    def publish(catalogue) -> None:
        app.state.catalogue = catalogue
        app.state.instances.catalogue = catalogue
        arena = getattr(app.state, "arena", None)
        if arena is not None:
            arena.catalogue = catalogue
            arena.battles.weights = {k: m.battle_weight for k, m in catalogue.models.items()}
        modes = getattr(app.state, "modes", None)
        if modes is not None:
            modes.use_catalogue(catalogue)
    return publish


def install(app: FastAPI) -> None:
    settings = AdminSettings()
    db = app.state.database
    admin = app.state.admin = Admin(settings, AuditLog(db), RequestAnalytics(db))
    # An overlay file merged into the catalogue (ARENA_CATALOGUE_OVERLAY) is the published copy of
    # the store's overlay: the base is read without it; an empty store imports it at start.
    catalogue = app.state.catalogue
    overlay = app.state.catalogue_overlay = CatalogueOverlay(catalogue.without_overlay(), db,
                                                             published_file=catalogue.overlay_file)
    overlay.on_catalogue_changed.append(publish_catalogue(app))
    app.state.on_store_ready.append(overlay.load)
    hub = app.state.hub_downloads = HubDownloads(HubConfig.from_environment(
        app.state.catalogue.fleet.model_cache_path(), max_bytes=settings.max_download_bytes,
        max_active=settings.max_active_downloads, list_timeout=settings.hub_list_timeout,
        max_listings=settings.max_hub_listings))
    app.state.metrics.observers.append(admin.analytics.record)
    jobs = [Periodic("admin analytics flush", settings.analytics_flush, admin.analytics.flush),
            Periodic("admin analytics roll-up", max(60.0, settings.analytics_flush), admin.maintain),
            Periodic("catalogue overlay refresh", settings.overlay_refresh, overlay.load)]

    async def start() -> None:
        await asyncio.to_thread(hub.recover)  # partial files a killed gateway left in the hub cache
        for job in jobs:
            job.start()

    async def stop() -> None:
        await hub.close()
        for job in jobs:
            await job.stop()
        await jobs[0].run_once()  # what the last seconds measured

    app.state.on_startup.append(start)
    app.state.on_shutdown.append(stop)
    app.include_router(pages)
    app.include_router(public)
    app.include_router(api)
    app.include_router(model_routes.router)
    app.mount("/static/admin", StaticFiles(directory=WEB_DIR, check_dir=False), name="admin-static")
