"""The modes pages in a real browser (Debian's Chromium) against a real gateway and real models.

Screenshots (light, dark, phone) land in build/screenshots/. Answers are a few tokens long."""

from __future__ import annotations

import pytest

from tests.modes.conftest import slots_active, wait_until

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.arena import test_browser as arena_ui  # noqa: E402 (after the skip)

# One browser set-up for the UI's tests: the arena's (Debian's Chromium, headless) and its fixtures.
browser, page_errors, new_page, shot = arena_ui.browser, arena_ui.page_errors, arena_ui.new_page, arena_ui.shot

LONG = 240_000  # ms: generations on a shared CPU
HOSTILE = ('**bold** <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
           '[click](javascript:window.__pwned=3)')


def open_page(browser, page_errors, url, **page_args):
    page = new_page(browser, page_errors, **page_args)
    page.goto(url)
    expect(page.locator("#participant-list select").first).to_be_visible()
    return page


def ask(page, question, *, max_tokens, rounds=None):
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", "0")
    if rounds is not None:
        page.fill("#rounds", str(rounds))
    page.fill("#question", question)
    page.press("#question", "Enter")


def test_council_page_streams_ranks_and_reopens_by_link(fleet, browser, page_errors):
    url = fleet["gateway"].url
    page = open_page(browser, page_errors, url + "/modes/council")
    expect(page.locator("[data-mode-link='council']")).to_have_attribute("aria-current", "page")
    expect(page.locator("#participant-list select")).to_have_count(3)
    ask(page, "What is the capital of France?", max_tokens=6)
    expect(page.locator(".turn[data-role='answer']").first).to_be_visible(timeout=30_000)
    expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=LONG)
    answers = page.locator(".turn[data-role='answer']")
    expect(answers).to_have_count(3)
    ranked = page.locator("#rankings tbody tr")
    assert ranked.count() >= 2
    shot(page, "modes-council-light")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shot(page, "modes-council-dark")

    # The link opens the stored session: the same turns and rankings, without a new run.
    href = page.get_attribute("#permalink", "href")
    export = page.get_attribute("#export", "href")
    assert href.startswith("/modes/council?t=") and export.endswith("?download=1")
    again = open_page(browser, page_errors, url + href)
    expect(again.locator("#status")).to_have_attribute("data-state", "done", timeout=15_000)
    expect(again.locator(".turn[data-role='answer']")).to_have_count(3)
    expect(again.locator("#rankings tbody tr")).to_have_count(ranked.count())
    assert again.input_value("#question") == "What is the capital of France?"
    assert page_errors == []


def test_roundtable_page_draws_convergence_and_stop_frees_every_slot(fleet, browser, page_errors):
    page = open_page(browser, page_errors, fleet["gateway"].url + "/modes/roundtable", width=390, height=844)
    page.locator("#participant-list .remove").last.click()
    expect(page.locator("#participant-list select")).to_have_count(2)
    ask(page, "Name a primary colour.", max_tokens=6, rounds=1)
    expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=LONG)
    chart = page.locator("#convergence-chart")
    expect(chart).to_have_attribute("data-points", "2")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.locator("#convergence tbody tr")).to_have_count(2)
    theme_before, axis_before = chart.get_attribute("data-theme"), chart.get_attribute("data-axis")
    assert axis_before.startswith("rgb"), "the canvas gets a resolved colour, not light-dark()"
    page.click("#theme-toggle")
    expect(chart).not_to_have_attribute("data-theme", theme_before)
    assert chart.get_attribute("data-axis") != axis_before, "redrawn in the new theme's colours"
    shot(page, "modes-roundtable-phone")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "no sideways scroll"

    # Stop: every generation of the session is cancelled, and the models' slots are free.
    ask(page, "Write a long essay about the history of the sea.", max_tokens=300, rounds=2)
    expect(page.locator(".turn.active .body").first).not_to_be_empty(timeout=60_000)
    assert sum(slots_active(s) for s in fleet["services"].values()) >= 1
    page.click("#stop")
    expect(page.locator("#status")).to_have_attribute("data-state", "stopped")
    wait_until(lambda: all(slots_active(s) == 0 for s in fleet["services"].values()), 10,
               what="every slot freed after Stop")
    expect(page.locator("#start")).to_be_enabled()
    assert page_errors == []


def test_discussion_page_shows_weights_and_sanitises_the_synthesis(external, browser, page_errors):
    fake = external["fake"]
    fake.set_answer(HOSTILE)
    try:
        # The page's CSP is bypassed here: the sanitizer alone must hold.
        page = open_page(browser, page_errors, external["gateway"].url + "/modes/discussion", bypass_csp=True)
        page.select_option("#orchestrator", "external")
        ask(page, "What is the capital of France?", max_tokens=4, rounds=1)
        expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=LONG)
    finally:
        fake.set_answer("<<not json>>")
    expect(page.locator("#weights tbody tr")).to_have_count(2)
    expect(page.locator("#weights-hint")).to_contain_text("equal weights")  # the plan was unreadable
    synthesis = page.locator("#synthesis")
    expect(synthesis.locator("strong")).to_have_text("bold")
    for place in (synthesis, page.locator(".turn[data-role='synthesis'] .body")):
        assert place.locator("script").count() == 0
        handlers = place.evaluate("el => [...el.querySelectorAll('*')].flatMap(n => [...n.attributes]"
                                  ".filter(a => a.name.startsWith('on')).map(a => n.tagName + ' ' + a.name))")
        assert handlers == []
        assert place.locator("a").get_attribute("href") in (None, "")
    synthesis.locator("a").click(modifiers=["Alt"])
    assert page.evaluate("window.__pwned") is None
    # The orchestrator's JSON turns are shown as text, never as HTML.
    expect(page.locator(".turn[data-role='plan'] pre.json")).to_contain_text("<script>")
    shot(page, "modes-discussion-light")
    assert page_errors == []
