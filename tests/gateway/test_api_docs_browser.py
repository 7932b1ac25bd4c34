"""/docs and /swagger-ui of the gateway and of a real model service in Chromium: Swagger UI
served by each app itself renders the operations under the app's strict Content-Security-Policy,
with no request leaving the app's origin (issue 11)."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import MODELS, gateway_env
from tests.harness import start_gateway, start_service

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.arena.test_browser import SCREENSHOTS, browser  # noqa: E402,F401 (the browser fixture)


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    service = start_service(MODELS[0])
    gateway = start_gateway(env=gateway_env(tmp_path_factory.mktemp("docs"), {MODELS[0]: [service.url]}))
    try:
        yield {"gateway": gateway.url, "service": service.url}
    finally:
        gateway.stop()
        service.stop()


@pytest.mark.parametrize("app", ["gateway", "service"])
@pytest.mark.parametrize("path", ["/docs", "/swagger-ui"])
def test_the_docs_render_every_operation_from_the_app_itself(apps, browser, app, path):  # noqa: F811
    origin = apps[app]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    requested: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))  # CSP refusals are console errors
    page.on("request", lambda r: requested.append(r.url))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
    try:
        response = page.goto(origin + path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "http" not in csp
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/v1/chat/completions" in [text.replace("\u200b", "") for text in operations]
        page.locator(".opblock-summary", has_text="/v1/chat/completions").first.click()  # expands, React-rendered
        page.wait_for_selector(".opblock-body", timeout=10_000)
        if path == "/docs":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"api-docs-{app}.png"))
        assert not problems, problems
        assert all(url.startswith((origin, "data:")) for url in requested), requested
    finally:
        context.close()
