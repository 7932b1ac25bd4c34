"""Pages that must not get stuck, in a real browser against a real gateway (keys required, a fast
stand-in instance so that a model is ready): the analytics refresh stops on logout, a gateway
that cannot be reached or refused storage is an error on the page (never an unhandled
rejection), and what a plain link cannot fetch with a key works anyway.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.modes.session import Transcript
from gateway.modes.transcripts import TranscriptRepository
from gateway.store import Database
from gateway.store.database import sqlite_url
from shared.processes import free_port
from tests.gateway.conftest import SMOL, FakeUpstreamProcess, gateway_env
from tests.harness import start_gateway, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.arena.test_browser import browser, new_page, page_errors  # noqa: E402,F401 (fixtures)
from tests.browser import submit_admin_key  # noqa: E402

ADMIN_KEY = "resilience-admin-key-0123456789"
STORED = "stored-session-01"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    data = tmp_path_factory.mktemp("resilience")

    async def store_session() -> None:
        db = Database(sqlite_url(data / "gateway.sqlite3"))
        await db.upgrade()
        try:
            await TranscriptRepository(db).save(Transcript(
                id=STORED, mode="council", question="Stored question?", settings={}, participants=[],
                orchestrator=None, finished=time.time(), status="done"))
        finally:
            await db.dispose()

    asyncio.run(store_session())
    fake = FakeUpstreamProcess("fake-resilience", ["--model", SMOL], free_port())
    fake.start()
    gateway = None
    try:
        fake.wait_ready("/health", timeout=30)
        gateway = start_gateway(env=gateway_env(data, {SMOL: [fake.url]}, admin_key=ADMIN_KEY, require_api_key="true",
                                                catalogue_instances="false"))
        wait_until(lambda: httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                     timeout=5).json()["data"], 30, what="the stand-in instance ready")
        yield gateway.url
    finally:
        for proc in (gateway, fake):
            if proc:
                proc.stop()


def test_the_analytics_refresh_stops_on_logout_and_resumes_on_login(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.clock.install()
    sent: list[str | None] = []
    is_refresh = lambda r: "/api/admin/analytics?" in r.url  # noqa: E731
    page.on("request", lambda r: is_refresh(r) and sent.append(r.headers.get("authorization")))
    page.goto(gateway + "/admin/analytics")
    with page.expect_request(is_refresh):
        submit_admin_key(page, ADMIN_KEY)
    with page.expect_request(is_refresh):
        page.clock.run_for(16_000)
    page.click("#logout")
    before = len(sent)
    page.clock.run_for(60_000)
    page.evaluate("1")  # a round trip: any request the timers made has been reported
    assert len(sent) == before and "Bearer null" not in sent
    with page.expect_request(is_refresh):
        submit_admin_key(page, ADMIN_KEY)
    with page.expect_request(is_refresh):
        page.clock.run_for(16_000)
    assert set(sent) == {f"Bearer {ADMIN_KEY}"} and page_errors == []
    page.context.close()


def test_an_unreachable_gateway_is_an_error_on_the_admin_page(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.route("**/api/admin/enabled", lambda route: route.abort())
    page.goto(gateway + "/admin/analytics")
    expect(page.locator("#admin-off")).to_contain_text("could not be reached")
    page.unroute("**/api/admin/enabled")
    page.route("**/api/admin/session", lambda route: route.abort())
    page.goto(gateway + "/admin/analytics")
    submit_admin_key(page, ADMIN_KEY)
    expect(page.locator("#login-error")).to_contain_text("could not be reached")
    assert page_errors == []
    page.context.close()


def test_a_session_permalink_opens_without_a_key_and_a_failed_load_says_so(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.goto(f"{gateway}/modes/council?t={STORED}")
    expect(page.locator("#question")).to_have_value("Stored question?")
    expect(page.locator("#session-links")).to_be_visible()
    export = page.locator("#export").get_attribute("href")
    assert httpx.get(gateway + export, timeout=5).status_code == 200  # a plain link: no key to send
    page.route("**/api/modes/transcripts/**", lambda route: route.abort())
    # The options load with the key (the page's key field is empty), so that only the session fails.
    page.route("**/api/modes/options", lambda route: route.continue_(
        headers={**route.request.headers, "authorization": f"Bearer {ADMIN_KEY}"}))
    page.goto(f"{gateway}/modes/council?t={STORED}")
    expect(page.locator("#status")).to_contain_text("Could not load the session")
    assert page_errors == []
    page.context.close()


def test_the_votes_download_sends_the_tabs_key(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.goto(gateway + "/leaderboard")
    page.click("text=Every vote (JSON Lines)")
    expect(page.locator("#generated")).to_contain_text("Could not download the votes")  # no key in this tab
    page.evaluate(f"sessionStorage.setItem('arena-api-key', '{ADMIN_KEY}')")
    with page.expect_download() as download:
        page.click("text=Every vote (JSON Lines)")
    assert download.value.suggested_filename == "votes.jsonl" and download.value.failure() is None
    assert page_errors == []
    page.context.close()


def test_compare_works_when_the_browser_refuses_storage(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.add_init_script(f"""sessionStorage.setItem("arena-api-key", "{ADMIN_KEY}");
        Storage.prototype.setItem = () => {{ throw new DOMException("insecure", "SecurityError"); }};""")
    page.goto(gateway + "/")
    chip = page.locator(f".chip[data-model='{SMOL}'] input")
    expect(chip).to_be_enabled()
    chip.set_checked(not chip.is_checked())
    chip.set_checked(not chip.is_checked())
    assert page_errors == []
    page.context.close()


def test_the_modes_page_takes_the_tabs_key_and_keeps_a_typed_one(gateway, browser, page_errors):  # noqa: F811
    page = new_page(browser, page_errors)
    page.goto(gateway + "/")
    page.evaluate(f"sessionStorage.setItem('arena-api-key', '{ADMIN_KEY}')")
    page.goto(gateway + "/modes/council")  # same tab: the key the arena keeps loads the models
    expect(page.locator("#api-key")).to_have_value(ADMIN_KEY)
    expect(page.locator("#participant-list select").first).to_be_attached()
    expect(page.locator(f"#participant-list select option[value='{SMOL}']").first).to_be_attached()
    page.context.close()
    # A fresh tab has no key: the options are refused until one is typed, then they load.
    page = new_page(browser, page_errors)
    page.goto(gateway + "/modes/council")
    expect(page.locator("#status")).to_contain_text("Could not load the models")
    page.fill("#api-key", ADMIN_KEY)
    page.locator("#api-key").dispatch_event("change")
    expect(page.locator(f"#participant-list select option[value='{SMOL}']").first).to_be_attached()
    assert page.evaluate("sessionStorage.getItem('arena-api-key')") == ADMIN_KEY
    assert page_errors == []
    page.context.close()
