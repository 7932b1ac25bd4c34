"""The admin side of the gateway: login with the admin key, audit log, API keys page, request
analytics and the playground.

`attach_admin(app)` adds `/admin/*` pages, `/static/admin/*` and the `/api/admin/*` routes of
`routes.py` (the key routes are `gateway.routes.admin_api`), starts the analytics flush and
roll-up in the background, and subscribes the analytics to the proxy's per-request samples.
The logic lives in plain classes: `audit.AuditLog`, `analytics.RequestAnalytics`.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["attach_admin"]


def attach_admin(app: FastAPI) -> None:
    from gateway.admin.routes import install

    install(app)
