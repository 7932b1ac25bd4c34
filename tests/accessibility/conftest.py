"""Every page of the gateway in a real browser, for the accessibility checks.

One gateway with a real instance of each embedded model (so Compare and Battle show answers)
over a store holding synthetic votes (so the leaderboard has tables and charts), with the admin
side on. The pages come from pages.yaml, next to this file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.admin.routes import PAGES as ADMIN_PAGES
from tests.arena.conftest import MODELS, fleet_urls, wait_models
from tests.arena.synthetic_votes import fill_store
from tests.harness import ManagedProcess, start_gateway, start_service

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.browser import log_in  # noqa: E402 (after the skip)

def _pages() -> list[dict]:
    """pages.yaml, plus any admin page the gateway registers that the list does not name yet."""
    pages = yaml.safe_load((Path(__file__).with_name("pages.yaml")).read_text(encoding="utf-8"))
    listed = {p["path"] for p in pages if p.get("admin")}
    for path, page in ADMIN_PAGES.items():
        if path not in listed:
            pages.append({"name": f"admin-{page.name}", "path": path, "admin": True})
    return pages


PAGES = _pages()
ADMIN_KEY = "a11y-admin-key-0123456789"


def page_ids(pages=PAGES) -> list[str]:
    return [p["name"] for p in pages]


@pytest.fixture(scope="package")
def site(tmp_path_factory):
    """The gateway's URL: both embedded models, synthetic votes, the admin side on."""
    data = tmp_path_factory.mktemp("a11y-data")
    fill_store(data / "gateway.sqlite3")
    env = {"ARENA_FLEET__DATA_DIR": str(data)}
    services: list[ManagedProcess] = []
    gateway = None
    try:
        for model in MODELS:
            services.append(start_service(model, env=env, timeout=300))
        gateway = start_gateway(env={**env, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                                     "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY, **fleet_urls(dict(zip(MODELS, services)))})
        wait_models(gateway.url, MODELS)
        yield gateway.url
    finally:
        for proc in [gateway, *services]:
            if proc:
                proc.stop()


def _short_answers(page) -> None:
    page.click("#settings summary")
    page.fill("#max-tokens", "8")
    page.fill("#temperature", "0")
    page.click("#settings summary")


def _answered(page) -> None:
    _short_answers(page)
    page.fill("#prompt", "Name a colour.")
    page.keyboard.press("Enter")
    panels = page.locator("#compare-panels .panel")
    expect(panels).to_have_count(len(MODELS))
    for i in range(len(MODELS)):
        expect(panels.nth(i)).to_have_attribute("data-status", "done", timeout=120_000)


def _voted(page) -> None:
    _short_answers(page)
    page.fill("#prompt", "Name a colour.")
    page.keyboard.press("Enter")
    for side in "ab":
        expect(page.locator(f"#battle-panels .panel[data-key='{side}']")).to_have_attribute(
            "data-status", "done", timeout=120_000)
    page.click("#vote-bar button[data-winner='model_a']")
    expect(page.locator("#vote-bar button[data-winner='model_a']")).to_have_class(re.compile(r"\bchosen\b"))


def _shared(page) -> None:
    """A voted battle shared, and its read-only page opened."""
    _voted(page)
    page.click("[data-action=share]")
    link = page.locator(".share-url")
    expect(link).to_be_visible(timeout=30_000)
    page.goto(link.get_attribute("href"))
    expect(page.locator("h1")).to_have_count(1)


STATES = {"answered": _answered, "voted": _voted, "shared": _shared}


def open_page(browser, site: str, spec: dict, **context_args):
    """A new context and page on `spec`'s page, logged in and brought to its state, settled."""
    context = browser.new_context(**context_args)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site + spec["path"])
    if spec.get("admin"):
        log_in(page, ADMIN_KEY)
    elif spec["path"].startswith("/admin"):
        expect(page.locator("#login")).to_be_visible()
    if spec.get("state"):
        STATES[spec["state"]](page)
    page.wait_for_load_state("networkidle")
    assert not errors, errors
    return page
