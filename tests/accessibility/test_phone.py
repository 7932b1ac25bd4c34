"""Every page of pages.yaml on a phone (390 x 844, touch): text fields at 16 px or more (iOS
zooms into smaller ones), touch targets at least 44 x 44 px; tables wider than the screen say
that they scroll sideways."""

from __future__ import annotations

import pytest

from tests.accessibility.conftest import PAGES, expect, open_page, page_ids
from tests.arena.test_browser import browser  # noqa: F401 (the fixture)
from tests.harness import wait_until

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
FIELDS = "input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=hidden]), textarea, select"
TARGETS = ("button, a.tab-link, .brand, select, summary, label.chip, label.check, "
           "input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=hidden]), textarea")

# What the page shows of each matching element: its box and its font size (visible ones only).
MEASURE = """(selector) => [...document.querySelectorAll(selector)]
    .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden'
                 && !e.closest('[hidden], .visually-hidden'))
    .map(e => { const r = e.getBoundingClientRect();
                return {what: e.outerHTML.slice(0, 90), width: r.width, height: r.height,
                        font: parseFloat(getComputedStyle(e).fontSize)}; })"""


@pytest.mark.parametrize("spec", PAGES, ids=page_ids())
def test_phone_fields_and_touch_targets(site, browser, spec):  # noqa: F811
    page = open_page(browser, site, spec, color_scheme="light", **PHONE)
    try:
        # Closed <details> hide their fields: open them to measure everything.
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        fields = page.evaluate(MEASURE, FIELDS)
        small_text = [f for f in fields if f["font"] < 16]
        assert not small_text, f"{spec['path']}: fields under 16 px on a phone: {small_text}"
        targets = page.evaluate(MEASURE, TARGETS)
        assert targets, "no target measured"
        small = [t for t in targets if t["height"] < 43.5 or t["width"] < 43.5]
        assert not small, f"{spec['path']}: touch targets under 44 x 44 px on a phone: {small}"
        # The top bar's links and tabs hold their whole label (the row scrolls rather than squeeze them).
        squeezed = page.evaluate("""() => [...document.querySelectorAll('.tabs a, .tabs button')]
            .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
        assert not squeezed, f"{spec['path']}: labels wider than their tab: {squeezed}"
    finally:
        page.context.close()


HINT_STATE = """(id) => { const box = document.getElementById(id).closest('.table-scroll');
    const hint = box.nextElementSibling;
    return {overflows: box.scrollWidth > box.clientWidth, more: box.hasAttribute('data-more'),
            focusable: box.tabIndex === 0, shadow: getComputedStyle(box).backgroundImage,
            hint: hint && hint.classList.contains('scroll-hint') && hint.getClientRects().length > 0
                  ? hint.textContent : null}; }"""


@pytest.mark.parametrize("path, table", [("/leaderboard", "ratings"), ("/status", "rows")])
def test_tables_that_scroll_sideways_say_so(site, browser, path, table):  # noqa: F811
    spec = {"name": path, "path": path}
    page = open_page(browser, site, spec, color_scheme="dark", **PHONE)
    try:
        if path == "/leaderboard":
            expect(page.locator("#ratings tbody tr").first).to_be_visible()
        state = page.evaluate(HINT_STATE, table)
        assert state["overflows"] and state["more"] and state["focusable"], state
        assert state["hint"] == "Scroll sideways to see every column", state
        assert state["shadow"].count("radial-gradient") == 2, state  # the edge shadows
        # Turned to a wide screen the table fits: the hint goes.
        page.set_viewport_size({"width": 1400, "height": 900})
        state = wait_until(lambda: (lambda s: s["hint"] is None and s)(page.evaluate(HINT_STATE, table)), 10,
                           what="the hint gone on a wide screen")
        assert not state["overflows"] and not state["more"] and not state["focusable"], state
    finally:
        page.context.close()
