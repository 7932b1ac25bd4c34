"""Interactive API documentation (Swagger UI) at `/docs` and `/swagger-ui` of either app, served
from the app itself.

FastAPI's own pages load Swagger UI from a CDN and start it with an inline script, which a
strict Content-Security-Policy blocks (and which cannot load offline). Here the bundle and its
stylesheet come from npm's `swagger-ui-dist` (installed by `scripts/install_web_assets.sh` into
`api_docs_assets/vendor/`), started by a script file of ours, under a CSP that allows scripts,
styles and fonts of the app's own origin only.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from shared.csp import CONTENT_SECURITY_POLICY

ASSETS = Path(__file__).parent / "api_docs_assets"
ASSET_PATH = "/static/api-docs"
DOCS_PATHS = ("/docs", "/swagger-ui")


def docs_page(title: str, openapi_url: str) -> str:
    title, openapi_url = html.escape(title), html.escape(openapi_url)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSET_PATH}/vendor/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{ASSET_PATH}/vendor/swagger-ui-bundle.js"></script>
<script src="{ASSET_PATH}/swagger-init.js"></script>
</body>
</html>
"""


def attach_api_docs(app: FastAPI) -> None:
    """`/docs` and `/swagger-ui` on `app` (created with ``docs_url=None, redoc_url=None``)."""
    page = docs_page(f"{app.title} - API", app.openapi_url or "/openapi.json")
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}

    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    for path in DOCS_PATHS:
        app.add_api_route(path, docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSET_PATH, StaticFiles(directory=ASSETS, check_dir=False), name="api-docs")
