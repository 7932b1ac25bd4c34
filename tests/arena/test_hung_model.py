"""A hung model fails its panel instead of leaving it "waiting" for ever.

Its own small fleet: a real `smollm2-135m` process (frozen with SIGSTOP mid-answer, as the fault
drills do) and a scripted `gemma3-270m` upstream that stays healthy but can hang, behind a
gateway whose answer deadline is short (`ARENA_ARENA__ANSWER_DEADLINE`).
"""

from __future__ import annotations

import re
import signal

import httpx
import pytest

from tests.arena.conftest import wait_models
from tests.arena.test_browser import browser, new_page, page_errors, set_max_tokens  # noqa: F401
from tests.harness import ManagedProcess, free_port, start_gateway, start_service, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

DEADLINE = 10  # seconds; the frozen process must fail its panel well before it, by the health checks


@pytest.fixture(scope="module")
def hung_fleet(tmp_path_factory):
    data = tmp_path_factory.mktemp("hung-data")
    port = free_port()
    scripted = ManagedProcess("scripted-gemma", ["--port", str(port), "--model", "gemma3-270m", "--chunks", "30",
                                                 "--chunk-delay", "0.05"], port, module="tests.fake_upstream")
    service = gateway = None
    try:
        scripted.start().wait_ready("/health", 60)
        service = start_service("smollm2-135m", env={"ARENA_FLEET__DATA_DIR": str(data)}, timeout=300)
        gateway = start_gateway(env={"ARENA_FLEET__DATA_DIR": str(data), "ARENA_ARENA__ANSWER_DEADLINE": str(DEADLINE),
                                     "SMOLLM2_135M_API_URL": service.url, "GEMMA3_270M_API_URL": scripted.url})
        wait_models(gateway.url, ("smollm2-135m", "gemma3-270m"))
        yield {"gateway": gateway, "service": service, "scripted": scripted}
    finally:
        if service and service.process and service.process.poll() is None:
            service.signal(signal.SIGCONT)
        for proc in (gateway, service, scripted):
            if proc:
                proc.stop()


def test_a_hung_model_shows_its_wait_then_fails_at_the_deadline(hung_fleet, browser, page_errors):  # noqa: F811 (fixtures)
    httpx.post(hung_fleet["scripted"].url + "/_control", json={"delay": 600})  # healthy, never answers
    try:
        page = new_page(browser, page_errors)
        page.goto(hung_fleet["gateway"].url + "/")
        expect(page.locator(".chip[data-model='smollm2-135m'] input")).to_be_checked()
        page.locator(".chip[data-model='smollm2-135m']").click()  # Gemma alone
        page.fill("#prompt", "Say hi.")
        page.keyboard.press("Enter")
        panel = page.locator("#compare-panels .panel[data-key='gemma3-270m']")
        expect(panel.locator(".badge")).to_have_text(re.compile(r"waiting [1-9]\d* s"), timeout=5_000)
        expect(panel).to_have_attribute("data-status", "error", timeout=(DEADLINE + 10) * 1000)
        expect(panel.locator(".msg.error")).to_contain_text(f"the arena's answer deadline is {DEADLINE} s")
        assert page_errors == []
        page.context.close()
    finally:
        httpx.post(hung_fleet["scripted"].url + "/_control", json={"delay": 0})


def test_a_frozen_model_fails_its_battle_side_once_the_gateway_takes_it_out(hung_fleet, browser, page_errors):  # noqa: F811 (fixtures)
    gateway, service = hung_fleet["gateway"].url, hung_fleet["service"]
    page = new_page(browser, page_errors)
    page.goto(gateway + "/#battle")
    set_max_tokens(page, 512)
    # Greedy, both models continue this for every one of the 512 tokens.
    page.fill("#prompt", "Continue the sequence: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    page.keyboard.press("Enter")

    def generating() -> bool:
        return httpx.get(service.url + "/health/details", timeout=5).json()["slots"]["active"] >= 1

    wait_until(generating, 60, interval=0.05, what="smollm2 answering its battle side")
    service.signal(signal.SIGSTOP)
    try:
        panels = page.locator("#battle-panels .panel")
        failed = page.locator("#battle-panels .panel[data-status='error']")
        expect(failed).to_have_count(1, timeout=DEADLINE * 1000)  # the health checks, not the deadline
        expect(failed.locator(".msg.error")).to_contain_text("stopped responding")
        expect(failed.locator(".msg.error")).not_to_contain_text("smollm2")  # still blind
        other = page.locator("#battle-panels .panel:not([data-status='error'])")
        expect(other).to_have_attribute("data-status", "done", timeout=30_000)
        expect(panels).to_have_count(2)
        # The stored side is an error, not an answer: nothing to vote on.
        expect(page.locator("#vote-bar")).to_be_hidden()
        expect(page.locator("#battle-result")).to_contain_text("cannot be voted on")
        battle_id = page.url.rsplit("/", 1)[1]
        sides = httpx.get(f"{gateway}/api/battles/{battle_id}").json()["sides"]
        assert sorted(s["status"] for s in sides.values()) == ["done", "error"]
        assert page_errors == []
        page.context.close()
    finally:
        service.signal(signal.SIGCONT)
