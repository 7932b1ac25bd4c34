"""The admin side as one story, in a real browser (Debian's Chromium), against a real `arena up`
(its supervisor, gateway and the model processes it starts) and the local fake of the hub serving
the real embedded SmolLM2 GGUF under a fake repository:

log in through the form -> add `hub:<repo>:Q4_1` on the Models page and watch it download ->
start an instance on the Instances page (loading -> ready) -> chat with it in the Playground ->
change its default max tokens and watch the rolling restart while a client loop keeps getting
answers -> create an API key and run the Playground's SDK code with it -> revoke it (401) ->
stop the instance (draining -> gone) -> remove the model -> every action in the audit log.

Screenshots land in build/screenshots/admin-story-*.png.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from tests.admin.test_models_browser import REPO, check, smollm2_gguf
from tests.fake_hub import FakeHub, serve_fake_hub
from tests.harness import ChatLoop, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.admin.test_browser import page, play  # noqa: E402,F401 (the page fixture, a Playground request)
from tests.arena.test_browser import browser  # noqa: E402,F401 (the browser fixture)
from tests.browser import log_in, shot  # noqa: E402

ADMIN_KEY = "story-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
EXPECTED_STATUSES = (409,)  # the refused Remove: an error the browser logs (the page fixture fails on any other)
KEY = "smollm2-135m-instruct-q4_1"  # the key the Models page suggests for the fake repository's Q4_1
DEFAULT_MAX_TOKENS = 5              # the setting the story changes
# A page that records each instance row's states, and how many rows are ready, each time it draws
# (every second, when something changed).
WATCH = """() => {
  window.seen = { states: {}, ready: [] };
  const note = () => {
    window.seen.ready.push(document.querySelectorAll("tr[data-state=ready]").length);
    for (const row of document.querySelectorAll("tr[data-instance]")) {
      const list = (window.seen.states[row.dataset.instance] ||= []);
      if (list.at(-1) !== row.dataset.state) list.push(row.dataset.state);
    }
  };
  new MutationObserver(note).observe(document.getElementById("models"), { childList: true, subtree: true, attributes: true });
  note();
}"""


@pytest.fixture(scope="module")
def hub():
    fake = FakeHub()
    fake.files[(REPO, "SmolLM2-135M-Instruct.Q4_1.gguf")] = (smollm2_gguf().read_bytes(), True)
    fake.files[(REPO, "README.md")] = (b"# SmolLM2 135M Instruct, GGUF\n", False)
    # 98 MB in 4 MiB chunks 20 ms apart: about half a second on the wire, a progress to watch.
    fake.chunk_size, fake.chunk_delay = 4 * 1024 * 1024, 0.02
    with serve_fake_hub(fake):
        yield fake


@pytest.fixture(scope="module")
def fleet(hub, tmp_path_factory):
    """`arena up` with no instance of any catalogue model: only what the story starts runs."""
    data, logs = tmp_path_factory.mktemp("story-data"), tmp_path_factory.mktemp("story-logs")
    port = free_port()
    proc = ManagedProcess("story-fleet", ["up", "--model", "smollm2-135m=0", "--port", str(port),
                                          "--log-dir", str(logs)], port,
                          env={"ARENA_FLEET__DATA_DIR": str(data), "ARENA_FLEET__MODEL_CACHE_DIR": str(data / "models"),
                               "HF_HUB_CACHE": str(data / "hub-cache"), "HF_ENDPOINT": hub.hub_url, "HF_TOKEN": "",
                               "HF_HUB_OFFLINE": "0", "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY,
                               "ARENA_GATEWAY_REQUIRE_API_KEY": "true", "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5",
                               "ARENA_ADMIN_MAX_DOWNLOAD_BYTES": "200000000", "ARENA_ADMIN_ANALYTICS_FLUSH": "1"})
    proc.start()
    try:
        proc.wait_ready("/health/live", timeout=120)
        proc.logs = logs
        yield proc
    finally:
        proc.stop(timeout=60)


def open_page(tab, url: str) -> None:
    """Another admin page in the same tab: the session's key lets it in without a login."""
    tab.goto(url)
    expect(tab.locator("#admin-main")).to_be_visible()
    expect(tab.locator("#login")).to_be_hidden()


def ready_instances(url: str) -> list[str]:
    view = httpx.get(url + "/api/admin/instances", headers=ADMIN, timeout=10).json()
    model = next((m for m in view["data"] if m["key"] == KEY), None)
    return [i["instance_id"] for i in model["instances"] if i["state"] == "ready"] if model else []


def test_the_admin_story_from_the_hub_to_a_revoked_key(fleet, hub, page):  # noqa: F811 (fixtures)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # Log in through the form: the key lands in this tab's session storage, never in a URL.
    log_in(page, ADMIN_KEY, fleet.url + "/admin/models")
    assert page.evaluate("sessionStorage.getItem('arena-admin-key')") == ADMIN_KEY
    assert "arena-admin-key" not in page.evaluate("Object.keys(localStorage)")

    # Add the fake repository's Q4_1 and watch its download reach done.
    check(page, REPO, "Q4_1")
    expect(page.locator("#new-key")).to_have_value(KEY)
    page.click("#download-button")
    download = page.locator(f"#downloads-table tr[data-model='{KEY}']")
    expect(download).to_be_visible()
    expect(download).to_have_attribute("data-state", "done", timeout=120_000)
    expect(download.locator(".percent")).to_have_text(" 100%")
    size = smollm2_gguf().stat().st_size
    expect(download.locator(".bytes")).to_have_text(f"{size / 1e6:.1f} MB / {size / 1e6:.1f} MB")
    model_row = page.locator(f"#models-table tr[data-model='{KEY}']")
    expect(model_row.locator(".badge")).to_have_text("runtime")
    expect(model_row).to_contain_text(f"hub:{REPO}:Q4_1")
    assert len(hub.seen("cdn", "GET")) == 1  # the file was fetched once, by the gateway
    shot(page, "admin-story-downloaded")

    # Start an instance from the Instances page: loading -> ready.
    open_page(page, fleet.url + "/admin/instances")
    card = page.locator(f'section[data-model="{KEY}"]')
    expect(card).to_contain_text("No instances.")
    expect(card.locator("h2")).to_have_text(KEY)  # a model with no name of its own: its key, once
    expect(page.locator("#fleet-kind code")).to_have_text("arena up")
    page.evaluate(WATCH)
    card.get_by_role("button", name=f"Start an instance of {KEY}").click()
    first = card.locator("tr[data-instance]")
    expect(first).to_have_count(1)
    first_id = first.get_attribute("data-instance")
    expect(first).to_have_attribute("data-state", "ready", timeout=120_000)
    assert page.evaluate("window.seen.states")[first_id] == ["loading", "ready"]
    assert len(hub.seen("cdn", "GET")) == 1  # the model process read the hub cache, no second download
    shot(page, "admin-story-started")

    # Chat with it in the Playground: the streamed answer, its timings, the request as code.
    open_page(page, fleet.url + "/admin/playground")
    play(page, KEY, message="Name a colour.", max_tokens="12", temperature="0", seed="7")
    expect(page.locator("#no-models")).to_be_hidden()
    expect(page.locator("#answer")).to_have_attribute("data-state", "streaming")
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=60_000)
    answer = page.locator("#answer").inner_text()
    assert answer.strip()
    assert page.locator("#t-ttft").inner_text().endswith(("ms", " s"))
    assert page.locator("#t-total").inner_text().endswith(("ms", " s"))
    assert 0 < int(page.locator("#t-tokens").inner_text()) <= 12
    assert float(page.locator("#t-tps").inner_text()) > 0
    assert page.locator("#t-finish").inner_text() in ("stop", "length")
    assert int(page.locator("#t-prompt-tokens").inner_text()) > 0
    curl = page.locator("#code-curl code").inner_text()
    python = page.locator("#code-python code").inner_text()
    assert f'"model": "{KEY}"' in curl and '"max_tokens": 12' in curl and "$ARENA_API_KEY" in curl
    assert f'model="{KEY}"' in python and "max_tokens=12" in python and "seed=7" in python
    assert ADMIN_KEY not in curl + python
    shot(page, "admin-story-playground")

    # Change its default max tokens on the Models page: a rolling restart applies it, and a client
    # loop going all along sees no failure.
    client = OpenAI(base_url=fleet.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
    with ChatLoop(client, KEY) as loop:
        answered, failures = loop.answered, loop.failures
        wait_until(lambda: answered or failures, 60, what="the client loop answered once")
        open_page(page, fleet.url + "/admin/models")
        # A second tab (window.open copies the session's key) watches the Instances page all along.
        with page.context.expect_page() as opened:
            page.evaluate("window.open('/admin/instances')")
        watcher = opened.value
        watcher.on("pageerror", lambda e: failures.append(f"the watching tab: {e}"))
        watched = watcher.locator(f'section[data-model="{KEY}"]')
        expect(watched.locator(f'tr[data-instance="{first_id}"]')).to_have_attribute("data-state", "ready")
        watcher.evaluate(WATCH)
        page.locator(f"#models-table tr[data-model='{KEY}']").get_by_role("button", name="Settings").click()
        page.fill("#settings-form input[name=default_max_tokens]", str(DEFAULT_MAX_TOKENS))
        page.click("#settings-form button[type=submit]")
        expect(page.locator("#settings-result")).to_contain_text("restarted one at a time")
        expect(page.locator(f"#models-table tr[data-model='{KEY}'] td").nth(4)).to_contain_text(f"{DEFAULT_MAX_TOKENS} /")
        expect(watched.locator("p.rolling")).to_contain_text("Rolling restart done: 1/1 replaced", timeout=180_000)
        expect(watched.locator(f'tr[data-instance="{first_id}"]')).to_have_attribute("data-state", "gone",
                                                                                      timeout=120_000)
        count = len(answered)
        wait_until(lambda: len(answered) > count or failures, 60, what="answers after the rolling restart")
    assert failures == []
    seen = watcher.evaluate("window.seen")
    assert min(seen["ready"]) == 1, seen  # never without a ready instance, as the page drew it from start to end
    second_id, = ready_instances(fleet.url)
    assert second_id != first_id
    # (How long each state lasts depends on the machine: the page, refreshed every second, may skip one.)
    old_states = seen["states"][first_id]
    assert (old_states[0], old_states[-1]) == ("ready", "gone"), seen
    assert seen["states"][second_id][-1] == "ready", seen
    shot(watcher, "admin-story-restarted")
    watcher.close()
    reply = client.chat.completions.create(model=KEY, messages=[{"role": "user", "content": "Tell a long story."}])
    assert reply.usage.completion_tokens <= DEFAULT_MAX_TOKENS  # the new setting reached the process

    # The Analytics page counts the story's requests to the new model, per model and per instance.
    open_page(page, fleet.url + "/admin/analytics")
    served = len(answered) + 2  # the loop's, the Playground's and the long story's
    totals = page.locator(f"#totals tr[data-series='{KEY}'] td")

    def counted() -> bool:
        page.click("#refresh")
        return totals.count() > 1 and int(totals.nth(1).inner_text()) >= served

    wait_until(counted, 30, 0.5, what="the story's requests in the analytics")
    page.select_option("#by", "instance")
    expect(page.locator(f"#totals tr[data-series='{KEY}/{first_id}']")).to_have_count(1)
    expect(page.locator(f"#totals tr[data-series='{KEY}/{second_id}']")).to_have_count(1)

    # Create an API key (its secret shown once) and run the Playground's SDK code with it.
    open_page(page, fleet.url + "/admin")
    page.fill("#key-name", "story key")
    page.click("#create-form button[type=submit]")
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("sk-arena-")
    key_row = page.locator("#keys-table tbody tr", has_text="story key")
    expect(key_row.locator(".badge")).to_have_text("active")
    env = {**os.environ, "ARENA_API_KEY": secret}
    shown = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, timeout=60, env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == answer.strip()  # temperature 0 and a seed: the Playground's answer
    assert secret not in httpx.get(fleet.url + "/api/admin/keys", headers=ADMIN).text  # shown once, never listed

    # Revoke it: its secret leaves the page, and the SDK is then refused with a 401.
    key_row.get_by_role("button", name="Revoke").click()
    expect(key_row.locator(".badge")).to_have_text("revoked")
    expect(page.locator("#new-key")).to_be_hidden()
    assert secret not in page.content()
    with pytest.raises(AuthenticationError) as refused:
        OpenAI(base_url=fleet.url + "/v1", api_key=secret, max_retries=0, timeout=30).chat.completions.create(
            model=KEY, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 401

    # The model cannot be removed while an instance of it runs: the Models page says why.
    open_page(page, fleet.url + "/admin/models")
    page.locator(f"#models-table tr[data-model='{KEY}']").get_by_role("button", name="Remove").click()
    expect(page.locator("#models-error")).to_contain_text(second_id)
    expect(page.locator(f"#models-table tr[data-model='{KEY}']")).to_have_count(1)

    # Stop the instance: draining -> gone.
    open_page(page, fleet.url + "/admin/instances")
    page.evaluate(WATCH)
    second = card.locator(f'tr[data-instance="{second_id}"]')
    expect(second).to_have_attribute("data-state", "ready")
    second.get_by_role("button", name=f"Stop {second_id}").click()
    expect(second).to_have_attribute("data-state", "gone", timeout=120_000)
    expect(second.locator("td").nth(4)).to_have_text("–")  # no active count from a gone instance's last probe
    assert page.evaluate("window.seen.states")[second_id] == ["ready", "draining", "gone"]
    assert ready_instances(fleet.url) == []
    open_page(page, fleet.url + "/admin/playground")  # nothing served now: the page says where to start one
    expect(page.locator("#no-models")).to_be_visible()
    expect(page.locator("#send")).to_be_disabled()

    # Remove the model, now that nothing runs it: out of the catalogue (its file stays in the hub cache).
    open_page(page, fleet.url + "/admin/models")
    page.locator(f"#models-table tr[data-model='{KEY}']").get_by_role("button", name="Remove").click()
    expect(page.locator(f"#models-table tr[data-model='{KEY}']")).to_have_count(0)
    expect(page.locator("#models-error")).to_be_hidden()

    # The audit log lists every action of the story.
    open_page(page, fleet.url + "/admin")
    actions = page.locator("#audit-table tbody tr td:nth-child(2)")
    expect(actions.first).to_have_text("model.remove")
    seen = set(actions.all_inner_texts())
    assert {"login", "model.download", "instance.start", "model.settings", "instance.rolling_restart", "key.create",
            "key.revoke", "instance.stop", "model.remove"} <= seen, seen
    shot(page, "admin-story-audit")
    assert all(ADMIN_KEY not in url and secret not in url for url in requests + [page.url])
    # Nor in a log (the supervisor's, the gateway's, the model processes'), nor the specs it wrote.
    logs = [fleet.log_path, *(path for path in fleet.logs.rglob("*") if path.is_file())]
    logged = "".join(path.read_text(errors="replace") for path in logs)
    assert len(logs) >= 4 and "key=admin" in logged  # the requests were logged, by who, not with what
    assert ADMIN_KEY not in logged and secret not in logged


def test_an_instance_that_cannot_load_its_model_says_why_and_can_be_stopped(fleet, hub, page):  # noqa: F811
    """A catalogue model whose repository the hub does not have: its process starts, cannot load,
    and says so; the page shows it unhealthy with the reason (not loading for ever)."""
    missing = "qwen3-4b-instruct-2507"  # hub:unsloth/Qwen3-4B-Instruct-2507-GGUF:Q4_K_M, not in the fake hub
    log_in(page, ADMIN_KEY, fleet.url + "/admin/instances")
    card = page.locator(f'section[data-model="{missing}"]')
    card.get_by_role("button", name=f"Start an instance of {missing}").click()
    row = card.locator("tr[data-instance]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-state", "unhealthy", timeout=60_000)
    expect(row.locator(".why")).to_contain_text("reports status error: ")
    expect(row.locator(".why")).to_contain_text("unsloth/Qwen3-4B-Instruct-2507-GGUF")
    shot(page, "admin-story-cannot-load")
    instance_id = row.get_attribute("data-instance")
    row.get_by_role("button", name=f"Stop {instance_id}").click()
    expect(row).to_have_attribute("data-state", "gone", timeout=60_000)
    expect(row.locator(".why")).to_have_count(0)
