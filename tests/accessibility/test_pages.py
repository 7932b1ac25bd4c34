"""What axe cannot see: the chosen vote (a disabled button, which axe skips) keeps AA contrast,
and /status wears the arena's look: its stylesheet, the dark theme, the way back to the arena."""

from __future__ import annotations

import re

import pytest

from tests.accessibility.conftest import expect, open_page
from tests.arena.test_browser import browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser

# WCAG's contrast ratio of the element's text on its own background, with its opacity.
CONTRAST = """(selector) => {
    const e = document.querySelector(selector), s = getComputedStyle(e);
    const rgb = c => c.match(/[\\d.]+/g).map(Number);
    let opacity = 1;
    for (let n = e; n; n = n.parentElement) opacity *= parseFloat(getComputedStyle(n).opacity);
    const page = rgb(getComputedStyle(document.body).backgroundColor);
    const over = (c, under, a) => c.slice(0, 3).map((v, i) => v * a + under[i] * (1 - a));
    const bgRaw = rgb(s.backgroundColor), bg = over(bgRaw, page, (bgRaw[3] ?? 1) * opacity);
    const fg = over(rgb(s.color), bg, opacity);
    const linear = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    const lum = c => { const [r, g, b] = c.map(linear); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return (hi + 0.05) / (lo + 0.05); }"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_chosen_vote_keeps_aa_contrast(site, browser, scheme):  # noqa: F811
    spec = {"name": "battle-voted", "path": "/#battle", "state": "voted"}
    page = open_page(browser, site, spec, viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        chosen = "#vote-bar button[data-winner='model_a']"
        assert page.locator(chosen).is_disabled()  # the vote is cast: no second one
        assert page.evaluate(CONTRAST, chosen) >= 4.5
        # The votes not chosen are disabled and say so, still readable.
        assert page.evaluate(CONTRAST, "#vote-bar button[data-winner='tie']") >= 4.5
    finally:
        page.context.close()


BACKGROUND_LUMINANCE = """() => {
    const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/[\\d.]+/g).map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255; }"""


def test_status_has_the_arenas_look_theme_and_way_back(site, browser):  # noqa: F811
    page = open_page(browser, site, {"name": "status", "path": "/status"}, color_scheme="dark")
    try:
        assert page.evaluate(BACKGROUND_LUMINANCE) < 0.2  # the system's dark theme
        expect(page.locator("h1")).to_have_text("Fleet status")
        expect(page.locator(".topbar .tab-link[aria-current=page]")).to_have_text("Status")
        expect(page.locator("#rows .state.ready").first).to_be_visible()
        # The theme toggle works here, and the choice carries over to the arena.
        page.click("#theme-toggle")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        assert page.evaluate(BACKGROUND_LUMINANCE) > 0.8
        page.click(".topbar a.tab-link[href='/']")
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        assert page.evaluate(BACKGROUND_LUMINANCE) > 0.8
        # The rows refresh in place (every 2 s) and keep their look.
        page.go_back()
        updated = page.locator("#updated")
        expect(updated).to_have_text(re.compile(r"\d"), timeout=10_000)
        expect(page.locator("#rows .state.ready").first).to_be_visible()
    finally:
        page.context.close()
