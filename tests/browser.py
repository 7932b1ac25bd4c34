"""What every real-browser test shares (Debian's Chromium, driven by Playwright): where the
browser is, where screenshots land, and logging in to the admin pages through their form.

A test module imports this after its own `pytest.importorskip("playwright.sync_api")`."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.harness import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = PROJECT_ROOT / "build" / "screenshots"


def shot(page, name: str) -> None:
    """The whole page, as build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def submit_admin_key(page, key: str) -> None:
    """Type `key` into the admin login form and send it (whatever the answer)."""
    page.fill("#admin-key", key)
    page.click("#login button[type=submit]")


def log_in(page, key: str, url: str | None = None) -> None:
    """Log in through the admin login form, at `url` when given (opened first, where the form must
    show), and wait for the admin view."""
    if url is not None:
        page.goto(url)
        expect(page.locator("#login")).to_be_visible()
    submit_admin_key(page, key)
    expect(page.locator("#admin-main")).to_be_visible()
