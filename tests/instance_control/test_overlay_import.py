"""A gateway on Actions whose store was lost takes back the catalogue overlay it had published:
real gateway processes on a fresh store, their fleet the local fake of GitHub's API on a loopback
port. The repository's `config/catalogue.overlay.yaml` (or the checkout's file that
ARENA_CATALOGUE_OVERLAY names) is imported at start, audit-logged by `startup`, so the runners of
its runtime models are accepted again; a store that holds an overlay is never overwritten.
Also the Instances page of such a gateway: a fleet-up instance asked to drain alone shows that it
waits for its runner's next heartbeat, then that its runner was told."""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.fleet.fake_github import FakeGitHub, serving

SMOL = "smollm2-135m"
COPY = "smol-copy"
REPO = "arena/fleet"
PATH = "config/catalogue.overlay.yaml"
GITHUB_TOKEN = "ghp_overlayimporttoken0123456789"
ADMIN = "overlay-import-admin-key-0123456789"
REG_TOKEN = "overlay-import-registration-token"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REG_AUTH = {"Authorization": f"Bearer {REG_TOKEN}"}


def overlay_text(key: str = COPY, n_ctx: int = 1024) -> str:
    from shared.catalogue import load_catalogue

    source = str(load_catalogue(environ={}).models[SMOL].source)
    return yaml.safe_dump({"models": {SMOL: {"n_ctx": n_ctx},
                                      key: {"display_name": "Smol copy", "source": source, "port": 8190,
                                            "hostname": key, "instances": 0}}})


@pytest.fixture
def github():
    fake = FakeGitHub(REPO, GITHUB_TOKEN)
    fake.files["main"][PATH] = overlay_text().encode()
    with serving(fake) as url:
        yield fake, url


@pytest.fixture
def gateway_on(github, tmp_path, gateways):
    """`gateway_on(**env)`: a gateway on this test's store (tmp_path/data), publishing to the fake
    GitHub (stopped at the end by the `gateways` fixture)."""
    _, api_url = github

    def start(**extra: str):
        return gateways({"ARENA_REGISTRATION_TOKEN": REG_TOKEN, "ARENA_GATEWAY_ADMIN_KEY": ADMIN,
                         "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_FLEET__DATA_DIR": str(tmp_path / "data"),
                         "ARENA_FLEETCTL_GITHUB_REPOSITORY": REPO, "ARENA_FLEETCTL_GITHUB_TOKEN": GITHUB_TOKEN,
                         "ARENA_FLEETCTL_GITHUB_API_URL": api_url, **extra})

    return start


def models(gateway) -> dict[str, dict]:
    answer = httpx.get(gateway.url + "/api/admin/models", headers=ADMIN_AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    return {m["id"]: m for m in answer.json()["data"]}


def imports(gateway) -> list[dict]:
    audit = httpx.get(gateway.url + "/api/admin/audit", headers=ADMIN_AUTH, timeout=30).json()["data"]
    return [e for e in audit if e["action"] == "catalogue.import"]


def register(gateway, instance_id: str, model: str = COPY) -> httpx.Response:
    return httpx.post(gateway.url + "/api/instances", headers=REG_AUTH, timeout=30,
                      json={"model": model, "instance_id": instance_id, "url": "http://127.0.0.1:9"})


def test_a_fresh_store_imports_the_published_overlay_and_a_kept_one_is_never_overwritten(github, gateway_on):
    fake, _ = github
    gateway = gateway_on()
    known = models(gateway)
    assert known[COPY]["runtime"] is True and known[COPY]["display_name"] == "Smol copy"
    assert known[SMOL]["overrides"] == {"n_ctx": 1024}
    (entry,) = imports(gateway)
    assert entry["actor"] == "startup" and entry["target"] == f"{REPO}@main:{PATH}"
    assert sorted(entry["detail"]["models"]) == [COPY, SMOL]
    registered = register(gateway, "smol-copy.1.run")
    assert registered.status_code == 200, registered.text   # its runner is accepted again
    # The import published nothing: the repository's copy is what the store now holds.
    assert fake.commits == []
    gateway.stop()   # before the restart on the same store

    # Restarted on the same store, the repository's copy changed meanwhile: the store stands.
    fake.files["main"][PATH] = overlay_text("other-copy", n_ctx=1536).encode()
    again = gateway_on()
    known = models(again)
    assert COPY in known and "other-copy" not in known and known[SMOL]["overrides"] == {"n_ctx": 1024}
    assert len(imports(again)) == 1   # the first start's


def test_the_checkout_s_overlay_file_is_imported_with_the_base_read_without_it(github, tmp_path, gateway_on):
    fake, _ = github
    checkout = tmp_path / "catalogue.overlay.yaml"
    checkout.write_text(overlay_text("file-copy", n_ctx=1536))
    gateway = gateway_on(ARENA_CATALOGUE_OVERLAY=str(checkout))
    known = models(gateway)
    # A runtime model of the store (removable), not a model of the catalogue file.
    assert known["file-copy"]["runtime"] is True and COPY not in known
    assert known[SMOL]["overrides"] == {"n_ctx": 1536}
    (entry,) = imports(gateway)
    assert entry["target"] == str(checkout) and entry["actor"] == "startup"
    assert not any(r.endswith(f"/contents/{PATH}?ref=main") for r in fake.requests)
    assert register(gateway, "file-copy.1.run", "file-copy").status_code == 200


def test_an_empty_checkout_file_falls_back_to_the_repository_s_copy(tmp_path, gateway_on):
    checkout = tmp_path / "catalogue.overlay.yaml"
    checkout.write_text("models: {}\n")   # the committed empty overlay of an older checkout
    gateway = gateway_on(ARENA_CATALOGUE_OVERLAY=str(checkout))
    assert models(gateway)[COPY]["runtime"] is True
    assert imports(gateway)[0]["target"] == f"{REPO}@main:{PATH}"


@pytest.mark.browser
def test_the_instances_page_shows_a_drain_waiting_for_the_runner_s_heartbeat(github, gateway_on):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.browser import CHROMIUM, CHROMIUM_ARGS, submit_admin_key

    fake, _ = github
    fake.add_run("fleet.yml", f"arena-fleet model={COPY} instance=all id=-")
    gateway = gateway_on()
    registered = register(gateway, "smol-copy.1.fleet-up")
    assert registered.status_code == 200, registered.text
    secret = registered.json()["registration_secret"]
    stopped = httpx.delete(gateway.url + "/api/admin/instances/smol-copy.1.fleet-up", headers=ADMIN_AUTH,
                           timeout=30)
    assert stopped.status_code == 202 and stopped.json()["drain_requested"] is True, stopped.text

    def listed() -> dict:
        view = httpx.get(gateway.url + "/api/admin/instances", headers=ADMIN_AUTH, timeout=30).json()
        return next(m for m in view["data"] if m["key"] == COPY)["instances"][0]

    assert listed()["drain_requested"] is True and listed()["drain_heard"] is False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(gateway.url + "/admin/instances")
        submit_admin_key(page, ADMIN)
        row = page.locator('tr[data-instance="smol-copy.1.fleet-up"]')
        playwright_api.expect(row).to_contain_text("waiting for its runner's next heartbeat")
        playwright_api.expect(row).to_contain_text("draining")

        beat = httpx.post(gateway.url + "/api/instances/smol-copy.1.fleet-up/heartbeat", timeout=30,
                          headers={**REG_AUTH, "X-Arena-Registration-Secret": secret}, json={})
        assert beat.status_code == 200 and beat.json()["drain"] is True, beat.text
        assert listed()["drain_heard"] is True
        playwright_api.expect(row).to_contain_text("its runner was told at its heartbeat", timeout=10_000)
        browser.close()
