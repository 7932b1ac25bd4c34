"""One instance of a fleet-up run stopped alone, with real processes: a gateway whose fleet is
GitHub Actions (the local fake of GitHub's API on a loopback port), and two runner agents serving
smollm2 as the two jobs of one fleet-up run (`instance=all`, no instance id in its title) would.
The runners read the catalogue with the published overlay merged (ARENA_CATALOGUE_OVERLAY, as
the runner workflow sets it)."""

from __future__ import annotations

import httpx
import pytest

from tests.fleet.fake_github import FakeGitHub, serving
from tests.harness import ManagedProcess, free_port, wait_until

MODEL = "smollm2-135m"
REG_TOKEN = "fleet-up-registration-token"
ADMIN = "fleet-up-admin-key-0123456789"
GITHUB_TOKEN = "ghp_fleetupcontroltoken0123456789"
REPO = "arena/fleet"


@pytest.fixture
def github():
    fake = FakeGitHub(REPO, GITHUB_TOKEN)
    fake.add_run("fleet.yml", f"arena-fleet model={MODEL} instance=all id=-")
    with serving(fake) as url:
        yield fake, url


def test_one_instance_of_a_fleet_up_run_stops_alone_and_its_sibling_serves_on(github, tmp_path, gateways):
    fake, api_url = github
    overlay = tmp_path / "catalogue.overlay.yaml"
    overlay.write_text(f"models:\n  {MODEL}:\n    parallel: 3\n")
    gateway = gateways({"ARENA_REGISTRATION_TOKEN": REG_TOKEN, "ARENA_GATEWAY_ADMIN_KEY": ADMIN,
                        "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_FLEET__DATA_DIR": str(tmp_path),
                        "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5",
                        "ARENA_FLEETCTL_GITHUB_REPOSITORY": REPO, "ARENA_FLEETCTL_GITHUB_TOKEN": GITHUB_TOKEN,
                        "ARENA_FLEETCTL_GITHUB_API_URL": api_url})
    runner_env = {"ARENA_REGISTRATION_TOKEN": REG_TOKEN, "ARENA_CATALOGUE_OVERLAY": str(overlay),
                  "WORKFLOW_PAT": GITHUB_TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": api_url}
    runners = []
    for label in ("1", "2"):
        port = free_port()
        runners.append(ManagedProcess(f"runner-fleet-up-{label}", [
            "runner", MODEL, "--instance", label, "--tunnel", "none", "--port", str(port), "--heartbeat-seconds", "1",
            "--duration-hours", "1", "--successor", "github", "--gateway-url", gateway.url], port, runner_env))
    admin = httpx.Client(base_url=gateway.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})
    try:
        for runner in runners:
            runner.start()

        def ready() -> list[dict]:
            data = admin.get("/api/instances").json()["data"]
            found = [i for i in data if i["model"] == MODEL and i["state"] == "ready"]
            return found if len(found) == 2 else []

        instances = wait_until(ready, 240, what="both runners ready")
        # The runners read the overlay: 3 slots each, not the catalogue file's 4.
        assert all(i["slots_total"] == 3 for i in instances), instances
        first = next(i["instance_id"] for i in instances if f"{MODEL}.1." in i["instance_id"])
        second = next(i["instance_id"] for i in instances if f"{MODEL}.2." in i["instance_id"])

        stopped = admin.delete(f"/api/admin/instances/{first}")
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["drain_requested"] is True and stopped.json()["instance"]["state"] == "draining"

        # The first runner hears it at a heartbeat, drains and ends its job with success.
        assert runners[0].wait_exit(timeout=120) == 0
        log = runners[0].log_path.read_text()
        assert "draining: the gateway asked this instance to drain" in log, log
        wait_until(lambda: admin.get(f"/api/instances/{first}").json()["state"] == "gone", 30,
                   what="the stopped instance gone")
        # Its sibling serves on; the run was not cancelled and no successor was dispatched.
        assert runners[1].process.poll() is None
        assert admin.get(f"/api/instances/{second}").json()["state"] == "ready"
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=120, json={
            "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.text
        assert fake.runs[0].status == "in_progress" and fake.dispatches == []
        assert not any("/cancel" in r for r in fake.requests)
        audit = admin.get("/api/admin/audit").json()["data"]
        assert audit[0]["action"] == "instance.stop" and GITHUB_TOKEN not in str(audit)
    finally:
        admin.close()
        for runner in runners:
            runner.stop()
