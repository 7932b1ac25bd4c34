"""/static/arena serves what the pages load, never the front-end's development files."""

from __future__ import annotations

from gateway.static_assets import is_page_asset


def test_only_page_assets_are_served(gateway_apps):
    gateway = gateway_apps()
    for path in ("js/main.js", "arena.css", "favicon.svg", "theme.js"):
        assert gateway.get(f"/static/arena/{path}").status_code == 200, path
    for path in ("package.json", "package-lock.json", "node_modules/marked/package.json", "admin/shell.html", "templates/index.html",
                 "js/../package.json", "%2e%2e/pyproject.toml"):
        assert gateway.get(f"/static/arena/{path}").status_code == 404, path
    assert not is_page_asset("node_modules/dompurify/dist/purify.js")  # served if it were allowed: npm puts it there
    assert not is_page_asset(".git/config") and is_page_asset("vendor/marked.esm.js")
    assert not is_page_asset("index.html")  # pages are rendered from templates, never served as files
