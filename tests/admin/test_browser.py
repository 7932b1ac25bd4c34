"""The admin pages in a real browser (Debian's Chromium) against a real gateway and a real
smollm2 service: login, keys (create, use, limit, revoke), analytics charts after real requests,
and the playground streaming an answer, whose curl and OpenAI SDK code are then run as shown.

Screenshots of each page, light and dark, land in build/screenshots/admin-*.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.harness import start_gateway, start_service, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.arena.test_browser import SCREENSHOTS, browser  # noqa: E402,F401 (the browser fixture)
MODEL = "smollm2-135m"
ADMIN_KEY = "browser-admin-key-0123456789"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    env = {"ARENA_FLEET__DATA_DIR": str(tmp_path_factory.mktemp("admin-data"))}
    service = start_service(MODEL, env=env, timeout=300)
    gateway = None
    try:
        gateway = start_gateway(env={**env, "SMOLLM2_135M_API_URL": service.url,
                                     "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                                     "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY, "ARENA_GATEWAY_REQUIRE_API_KEY": "true", "ARENA_ADMIN_ANALYTICS_FLUSH": "1"})
        wait_until(lambda: any(m["id"] == MODEL for m in httpx.get(
                   gateway.url + "/api/arena/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]),
                   60, 0.3, what="smollm2 ready at the gateway")
        yield gateway
    finally:
        for proc in (gateway, service):
            if proc:
                proc.stop()


@pytest.fixture
def page(browser, request):  # noqa: F811 (the fixture imported above)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A refused login is a 401 the browser logs (a module using this fixture may expect other
    # refusals: its EXPECTED_STATUSES); every other console error fails the test.
    expected = getattr(request.module, "EXPECTED_STATUSES", (401,))
    page.on("console", lambda m: m.type == "error" and not any(
        m.text.startswith(f"Failed to load resource: the server responded with a status of {status}")
        for status in expected) and errors.append(m.text))
    yield page
    context.close()
    assert not errors, errors


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def both_themes(page, name: str) -> None:
    shot(page, f"{name}-light")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shot(page, f"{name}-dark")


def log_in(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#login")).to_be_visible()
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#login button[type=submit]")
    expect(page.locator("#admin-main")).to_be_visible()


ADMIN_PAGES = ("/admin", "/admin/analytics", "/admin/models", "/admin/playground", "/admin/instances")


def test_admin_off_without_a_key_says_how_to_turn_it_on(page, tmp_path):
    """Every admin page, with no admin key configured: off, saying how to turn it on, asking the
    admin API for nothing."""
    gateway = start_gateway(env={"ARENA_FLEET__DATA_DIR": str(tmp_path), "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                                 "ARENA_GATEWAY_ADMIN_KEY": ""})
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.split("?")[0]))
    try:
        for path in ADMIN_PAGES:
            page.goto(gateway.url + path)
            expect(page.locator("#admin-off")).to_be_visible()
            expect(page.locator("#admin-off-message")).to_contain_text("ARENA_GATEWAY_ADMIN_KEY")
            expect(page.locator("#login")).to_be_hidden()
            expect(page.locator("#admin-main")).to_be_hidden()
            expect(page.locator("#logout")).to_be_hidden()
        admin_api = {url.removeprefix(gateway.url) for url in asked if "/api/admin/" in url}
        assert admin_api == {"/api/admin/enabled"}, admin_api
    finally:
        gateway.stop()


def test_a_logged_out_page_asks_for_nothing_and_the_login_works_again(fleet, page):
    """The Instances page refreshes every second: once logged out it stops (a request without the
    key is a wrong key, counted, and would lock this client out of the login), and a login starts
    it again. The page's clock is run a minute on, past the limit of wrong keys."""
    page.clock.install()
    log_in(page, fleet.url + "/admin/instances")
    expect(page.locator("#fleet-off")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    asked: list[tuple[str, str | None]] = []
    page.on("request", lambda r: asked.append((r.url, r.headers.get("authorization"))))
    for _ in range(30):
        page.clock.run_for(2000)
        page.evaluate("fetch('/health/live').then((r) => r.status)")  # what the timers sent is seen by now
    assert [url for url, _ in asked if "/api/admin/" in url] == []
    expect(page.locator("#login-error")).to_be_hidden()
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#login button[type=submit]")
    expect(page.locator("#admin-main")).to_be_visible()
    with page.expect_request(lambda r: r.url.endswith("/api/admin/instances")) as refreshed:
        page.clock.run_for(2000)
    assert refreshed.value.headers["authorization"] == f"Bearer {ADMIN_KEY}"


@pytest.mark.parametrize("path, data", [("/admin", "/api/admin/keys"), ("/admin/analytics", "/api/admin/analytics?"),
                                        ("/admin/models", "/api/admin/downloads")])
def test_a_page_loads_its_data_again_at_a_new_login(fleet, page, path, data):
    """Logged out, then in again on the same page: the shared login calls the page's loader again
    (the page's clock stands still, so no refresh timer asks in its place)."""
    page.clock.install()
    log_in(page, fleet.url + path)
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#admin-key", ADMIN_KEY)
    with page.expect_request(lambda r: data in r.url) as loaded:
        page.click("#login button[type=submit]")
    assert loaded.value.headers["authorization"] == f"Bearer {ADMIN_KEY}"


def test_login_keeps_the_key_in_the_tab_only(fleet, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(fleet.url + "/admin")
    page.fill("#admin-key", "not-the-key")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("admin key")
    expect(page.locator("#admin-main")).to_be_hidden()
    shot(page, "login")
    log_in(page, fleet.url + "/admin")
    assert page.evaluate("sessionStorage.getItem('arena-admin-key')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0 or "arena-admin-key" not in page.evaluate("Object.keys(localStorage)")
    page.reload()  # the tab keeps the session
    expect(page.locator("#admin-main")).to_be_visible()
    page.goto(fleet.url + "/admin/analytics")
    expect(page.locator("#admin-main")).to_be_visible()
    assert all(ADMIN_KEY not in url for url in requests)
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('arena-admin-key')") is None


def test_keys_page_creates_uses_limits_and_revokes_a_key(fleet, page):
    log_in(page, fleet.url + "/admin")
    page.fill("#key-name", "browser test")
    page.click("#create-form button[type=submit]")
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("sk-arena-")
    key_id = httpx.get(fleet.url + "/api/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"][-1]["key_id"]
    row = page.locator(f"tr[data-key='{key_id}']")
    expect(row).to_contain_text("browser test")
    expect(row.locator(".badge")).to_have_text("active")

    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert httpx.post(fleet.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    def counted():
        page.reload()
        return page.locator(f"tr[data-key='{key_id}'] td.requests").inner_text() == "1"

    wait_until(counted, 15, 0.5, what="the key's request counted on the page")
    row.locator("input.rpm").fill("30")
    row.locator("button", has_text="Set").click()
    expect(page.locator("#audit-table")).to_contain_text("key.limit")
    expect(row.locator("input.rpm")).to_have_value("30")
    both_themes(page, "keys")
    row.locator("button", has_text="Revoke").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("key.revoke")
    assert secret not in page.content()  # shown once: gone after the list reloads
    assert httpx.post(fleet.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_analytics_charts_show_real_requests(fleet, page):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 8,
            "stream": True, "include_perf": True, "stream_options": {"include_usage": True}}
    for _ in range(3):
        with httpx.stream("POST", fleet.url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as response:
            assert response.status_code == 200
            response.read()
    log_in(page, fleet.url + "/admin/analytics")

    def served() -> int:
        page.click("#refresh")
        cell = page.locator(f"#totals tr[data-series='{MODEL}'] td").nth(1)
        return cell.count() and int(cell.inner_text()) >= 3

    wait_until(served, 15, 0.5, what="three requests in the analytics table")
    charts = page.evaluate("""() => ['chart-requests', 'chart-tokens', 'chart-speed', 'chart-latency', 'chart-arena']
        .map((id) => { const c = window.Chart.getChart(id); return c && { id, sets: c.data.datasets.map((d) => d.label),
                       points: c.data.datasets.map((d) => d.data.filter((v) => v !== null && v > 0).length) }; })""")
    assert all(charts), charts
    by_id = {c["id"]: c for c in charts}
    assert MODEL in by_id["chart-requests"]["sets"] and by_id["chart-requests"]["points"][0] >= 1
    assert by_id["chart-speed"]["points"][0] >= 1 and by_id["chart-latency"]["points"][0] >= 1  # tokens/s, TTFT
    assert f"{MODEL} queue" in by_id["chart-latency"]["sets"]
    row = page.locator(f"#totals tr[data-series='{MODEL}'] td")
    assert row.nth(7).inner_text() != "–"  # queue wait, reported by the instance
    both_themes(page, "analytics")
    page.select_option("#range", "hour:24")
    page.select_option("#by", "instance")
    expect(page.locator(f"#totals tr[data-series^='{MODEL}/']")).to_have_count(1)


def play(page, model: str, **fields: str) -> None:
    """Send one request from the Playground: the model picked, each field (by id) filled."""
    page.select_option("#model", model)
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#send")


def test_playground_streams_a_real_answer_and_its_code_runs(fleet, page):
    log_in(page, fleet.url + "/admin/playground")
    play(page, MODEL, system="You are terse.", message="Name a colour.", max_tokens="12", temperature="0", seed="7",
         top_k="20")
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=60_000)
    answer = page.locator("#answer").inner_text()
    assert answer.strip()
    assert page.locator("#t-ttft").inner_text().endswith("ms") or page.locator("#t-ttft").inner_text().endswith(" s")
    assert page.locator("#t-queue").inner_text() != "–" and page.locator("#t-finish").inner_text() in ("stop", "length")
    curl = page.locator("#code-curl code").inner_text()
    python = page.locator("#code-python code").inner_text()
    assert ADMIN_KEY not in curl + python and '"max_tokens": 12' in curl and "extra_body={\n        \"top_k\": 20\n    }" in python
    both_themes(page, "playground")

    env = {**os.environ, "ARENA_API_KEY": ADMIN_KEY}  # the admin key passes for an API key
    shown_curl = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, env=env)
    assert shown_curl.returncode == 0, shown_curl.stderr
    chunks = [json.loads(line[6:]) for line in shown_curl.stdout.splitlines()
              if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert streamed == answer  # temperature 0 and a seed: the same answer
    shown_python = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, timeout=60, env=env)
    assert shown_python.returncode == 0, shown_python.stderr
    assert shown_python.stdout.strip() == answer.strip()
