"""The admin side of the gateway: login with the admin key, audit log, API keys page, request
analytics and the playground.

`attach_admin(app)` adds `/admin/*` pages, `/static/admin/*` and the `/api/admin/*` routes of
`routes.py` (the key routes are `gateway.routes.admin_api`), starts the analytics flush and
roll-up in the background, and subscribes the analytics to the proxy's per-request samples.
The logic lives in plain classes: `audit.AuditLog`, `analytics.RequestAnalytics`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

__all__ = ["attach_admin", "record_admin_action"]


def attach_admin(app: FastAPI) -> None:
    from gateway.admin.routes import install

    install(app)


async def record_admin_action(request: Request, action: str, target: str = "",
                              detail: dict[str, Any] | None = None) -> None:
    """Write an admin action done through another package's route (the arena's) to the audit
    log, as done by the caller's admin key; nothing when the admin side is not attached."""
    admin = getattr(request.app.state, "admin", None)
    if admin is not None:
        await admin.record(request, action, target, detail)
