"""The arena's static files: only what the pages load, never the rest of `gateway/web`.

`gateway/web` also holds the front-end's development files (`package.json`, the lock file,
`node_modules/` after `npm install`, the pages' templates under `templates/`); a `StaticFiles`
mount of the whole folder would serve them all. `PageAssets` serves the scripts under `js/`, the
vendored libraries under `vendor/`, and the stylesheets, scripts and icons at the top (no page:
every page is rendered from its template); anything else is a 404.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

ASSET_FOLDERS = frozenset({"js", "vendor"})
TOP_LEVEL_SUFFIXES = frozenset({".css", ".js", ".svg"})


def is_page_asset(path: str) -> bool:
    parts = PurePosixPath(path.replace(os.sep, "/")).parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    if len(parts) == 1:
        return PurePosixPath(parts[0]).suffix in TOP_LEVEL_SUFFIXES
    return parts[0] in ASSET_FOLDERS


class PageAssets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        if not is_page_asset(path):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)
