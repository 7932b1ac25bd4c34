"""A real `arena up` (the supervisor, its gateway and real smollm2 processes) driven through the
gateway's admin API: start a second instance and see it serve, stop it and see it drain and its
process vanish, a rolling restart under a client loop that must see no failure, and
`POST /v1/models/{id}?action=unload|load`."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from tests.harness import ChatLoop, ManagedProcess, assert_openai_error, free_port, wait_until

SMOL = "smollm2-135m"
ADMIN = "fleet-control-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    gateway_port = free_port()
    proc = ManagedProcess("fleet-control", ["up", "--model", f"{SMOL}=1", "--port", str(gateway_port),
                                            "--log-dir", str(tmp_path_factory.mktemp("fleet-logs"))], gateway_port,
                          env={"ARENA_MODEL_SMOLLM2_135M__PORT": str(free_port()),
                               "ARENA_FLEET__DATA_DIR": str(tmp_path_factory.mktemp("fleet-data")),
                               "ARENA_GATEWAY_ADMIN_KEY": ADMIN, "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5"})
    proc.start()
    try:
        proc.wait_ready("/health", timeout=300)
        yield proc.url
    finally:
        proc.stop(timeout=60)


def instances(url: str) -> list[dict]:
    view = httpx.get(url + "/api/admin/instances", headers=AUTH, timeout=10).json()
    return next(m for m in view["data"] if m["key"] == SMOL)["instances"]


def state_of(url: str, instance_id: str) -> str | None:
    return next((i["state"] for i in instances(url) if i["instance_id"] == instance_id), None)


def ask(url: str, text: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": text}]})


def test_a_started_instance_goes_loading_to_ready_and_serves(fleet):
    view = httpx.get(fleet + "/api/admin/instances", headers=AUTH).json()
    assert view["fleet"]["kind"] == "local"
    started = httpx.post(fleet + "/api/admin/instances", json={"model": SMOL}, headers=AUTH, timeout=30)
    assert started.status_code == 202, started.text
    new = started.json()["instance"]
    assert new["state"] == "loading" and new["instance_id"] == f"{SMOL}-1" and started.json()["pid"]
    seen = [state_of(fleet, new["instance_id"])]
    wait_until(lambda: seen.append(state_of(fleet, new["instance_id"])) or seen[-1] == "ready", 240, 0.2,
               what="the new instance ready")
    assert set(seen) <= {"loading", "ready"}, seen  # never unhealthy while it loads
    # The process started is the one serving (not killed and restarted by the supervisor).
    assert (new["instance_id"], started.json()["pid"]) in _supervisor_pids(fleet)
    served = set()
    wait_until(lambda: served.add(ask(fleet, f"Say {len(served)} {os.urandom(4).hex()}").headers["x-arena-instance"])
               or new["instance_id"] in served, 60, what="an answer from the new instance")


def test_a_stopped_instance_drains_and_its_process_vanishes(fleet):
    victim = f"{SMOL}-1"
    pid = next(p for p in _supervisor_pids(fleet) if p[0] == victim)[1]
    stopped = httpx.delete(f"{fleet}/api/admin/instances/{victim}", headers=AUTH, timeout=30)
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["instance"]["state"] == "draining"
    wait_until(lambda: state_of(fleet, victim) == "gone", 120, 0.2, what="the drained instance gone")
    assert pid not in [p for _, p in _supervisor_pids(fleet)]
    assert all(ask(fleet, "Hi").headers["x-arena-instance"] == f"{SMOL}-0" for _ in range(3))
    assert_openai_error(httpx.delete(f"{fleet}/api/admin/instances/{victim}", headers=AUTH), 404, "instance_not_found")


def test_a_rolling_restart_keeps_the_model_answering(fleet):
    before = {i["instance_id"] for i in instances(fleet) if i["state"] == "ready"}
    client = OpenAI(base_url=fleet + "/v1", api_key="unused", max_retries=0, timeout=60)
    with ChatLoop(client, SMOL) as loop:
        answered, failures = loop.answered, loop.failures
        wait_until(lambda: answered, 60, what="the client loop answered once")
        started = httpx.post(fleet + "/api/admin/instances/restart", json={"model": SMOL}, headers=AUTH)
        assert started.status_code == 202, started.text
        view = lambda: next(m for m in httpx.get(fleet + "/api/admin/instances", headers=AUTH).json()["data"]  # noqa: E731
                            if m["key"] == SMOL)["rolling_restart"]
        wait_until(lambda: view()["state"] != "running", 300, 0.3, what="the rolling restart done")
        assert view()["state"] == "done", view()
        count = len(answered)
        wait_until(lambda: len(answered) > count, 60, what="answers after the restart")
    assert failures == []
    after = {i["instance_id"] for i in instances(fleet) if i["state"] == "ready"}
    assert after and after.isdisjoint(before), (before, after)
    audit = httpx.get(fleet + "/api/admin/audit", headers=AUTH).json()["data"]
    assert {"instance.start", "instance.stop", "instance.rolling_restart"} <= {e["action"] for e in audit}


def test_a_settings_change_reaches_the_processes_by_a_rolling_restart(fleet):
    """A setting changed in the runtime overlay travels with each replacement's start, into the
    model process's own catalogue: its default max_tokens bounds an answer that sets none."""
    before = {i["instance_id"] for i in instances(fleet) if i["state"] == "ready"}
    changed = httpx.patch(f"{fleet}/api/admin/models/{SMOL}/settings", json={"default_max_tokens": 3}, headers=AUTH)
    assert changed.status_code == 200, changed.text
    assert changed.json()["restart"] == "rolling"
    view = lambda: next(m for m in httpx.get(fleet + "/api/admin/instances", headers=AUTH).json()["data"]  # noqa: E731
                        if m["key"] == SMOL)["rolling_restart"]
    wait_until(lambda: view()["reason"] == "settings changed" and view()["state"] != "running", 300, 0.3,
               what="the settings' rolling restart done")
    assert view()["state"] == "done", view()
    after = {i["instance_id"] for i in instances(fleet) if i["state"] == "ready"}
    assert after and after.isdisjoint(before)
    reply = httpx.post(fleet + "/v1/chat/completions", timeout=60, json={
        "model": SMOL, "messages": [{"role": "user", "content": "Write a long story about the sea."}]}).json()
    assert reply["usage"]["completion_tokens"] <= 3, reply


def test_unload_drains_every_instance_and_load_brings_one_back(fleet):
    url = f"{fleet}/v1/models/{SMOL}"
    assert httpx.post(url, params={"action": "load"}, headers=AUTH).json()["status"] == "loaded"
    unloaded = httpx.post(url, params={"action": "unload"}, headers=AUTH, timeout=30)
    assert unloaded.status_code == 202 and unloaded.json()["status"] == "unloading", unloaded.text
    wait_until(lambda: all(i["state"] == "gone" for i in instances(fleet)), 120, 0.2, what="every instance gone")
    assert_openai_error(ask(fleet, "Hi"), 503)
    assert _supervisor_pids(fleet) == []
    # Two loads at once start one instance: the second sees the first's start under way.
    together = threading.Barrier(2)

    def load() -> httpx.Response:
        together.wait(10)
        return httpx.post(url, params={"action": "load"}, headers=AUTH, timeout=30)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: load(), range(2)))
    for loaded in answers:
        assert loaded.status_code == 202 and loaded.json()["status"] == "loading", loaded.text
    assert sum(loaded.json()["started"] is not None for loaded in answers) == 1
    wait_until(lambda: httpx.post(url, params={"action": "load"}, headers=AUTH).json()["status"] == "loaded",
               240, 0.3, what="the model loaded again")
    assert ask(fleet, "Hi").status_code == 200
    assert len(_supervisor_pids(fleet)) == 1 and len([i for i in instances(fleet) if i["state"] != "gone"]) == 1


def _supervisor_pids(fleet: str) -> list[tuple[str, int]]:
    """(instance, pid) of each model process this `arena up` runs now, read from /proc (the
    control channel's own list is the gateway's secret)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                args = handle.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and b"--instance-id" in args:
            instance = args[args.index(b"--instance-id") + 1].decode()
            if instance.startswith(f"local-{SMOL}-") and _child_of_fleet(int(pid), fleet):
                found.append((instance.removeprefix("local-"), int(pid)))
    return found


def _child_of_fleet(pid: int, fleet: str) -> bool:
    port = fleet.rsplit(":", 1)[1]
    try:
        with open(f"/proc/{pid}/stat") as handle:
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as handle:
            return port.encode() in handle.read().split(b"\0")
    except OSError:
        return False



@pytest.mark.browser
def test_the_instances_page_starts_and_stops_an_instance(fleet):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.browser import CHROMIUM, CHROMIUM_ARGS, shot, submit_admin_key

    expect = playwright_api.expect
    known = {i["instance_id"] for i in instances(fleet)}
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(fleet + "/admin/instances")
            submit_admin_key(page, ADMIN)
            card = page.locator(f'section[data-model="{SMOL}"]')
            expect(card.locator("tr[data-state=ready]")).to_have_count(1, timeout=30_000)
            expect(page.locator("#fleet-kind")).to_contain_text("local fleet")
            card.get_by_role("button", name=f"Start an instance of {SMOL}").click()
            new_id = wait_until(lambda: next((i["instance_id"] for i in instances(fleet)
                                              if i["instance_id"] not in known), None), 30, what="the new instance")
            row = card.locator(f'tr[data-instance="{new_id}"]')
            expect(row).to_have_attribute("data-state", "ready", timeout=240_000)
            shot(page, "admin-instances")
            row.get_by_role("button", name=f"Stop {new_id}").click()
            expect(row).to_have_attribute("data-state", "draining", timeout=30_000)
            expect(row).to_have_attribute("data-state", "gone", timeout=120_000)
            expect(card.locator("tr[data-state=ready]")).to_have_count(1)
            assert not errors, errors
        finally:
            browser.close()
