"""The instance-control API of an in-process gateway: `POST /v1/models/{id}?action=load|unload`
and `/api/admin/instances` refusing every bad input in OpenAI's error shape, and the fleet on
Actions driven through the project's GitHub client against the local fake of GitHub's API."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from gateway.instance_control.backends import ActionsFleet, LocalSupervisor
from scripts.github_api import GitHubClient
from shared.errors import ModelNotFound
from tests.fleet.fake_github import FakeGitHub
from tests.harness import assert_openai_error, wait_until
from tests.loopback import LoopbackServer, QuietHandler

SMOL = "smollm2-135m"
ADMIN = "instances-admin-key-0123456789"
REG_TOKEN = "registration-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def gateway(gateway_apps):
    return gateway_apps(admin_key=ADMIN, registration_token=REG_TOKEN)


def test_load_and_unload_refuse_bad_input(gateway, gateway_apps):
    url = f"/v1/models/{SMOL}"
    assert_openai_error(gateway.post(url, params={"action": "load"}), 401, "invalid_admin_key")
    assert_openai_error(gateway.post(url, params={"action": "load"}, headers={"Authorization": "Bearer nope"}),
                        401, "invalid_admin_key")
    assert_openai_error(gateway.post(url, params={"action": "reload"}, headers=AUTH), 400, "invalid_value", "action")
    assert_openai_error(gateway.post(url, headers=AUTH), 400, "invalid_value", "action")
    assert_openai_error(gateway.post(url, params={"action": "x" * 50}, headers=AUTH), 400)
    assert_openai_error(gateway.post("/v1/models/no-such-model", params={"action": "load"}, headers=AUTH),
                        404, "model_not_found", "model")
    # No fleet to start instances in: the answer says how to configure one.
    error = assert_openai_error(gateway.post(url, params={"action": "load"}, headers=AUTH), 503,
                                "fleet_control_not_configured")
    assert "arena up" in error["message"] and "ARENA_FLEETCTL_GITHUB_REPOSITORY" in error["message"]
    # Without an admin key configured, the endpoint is off like the rest of the admin side.
    off = gateway_apps(admin_key=None)
    assert_openai_error(off.post(url, params={"action": "load"}, headers=AUTH), 503, "admin_disabled")


def test_the_admin_instances_api_refuses_bad_input(gateway):
    assert_openai_error(gateway.get("/api/admin/instances"), 401, "invalid_admin_key")
    view = gateway.get("/api/admin/instances", headers=AUTH).json()
    assert view["fleet"]["kind"] is None and "ARENA_FLEETCTL_GITHUB_TOKEN" in view["fleet"]["message"]
    assert SMOL in [m["key"] for m in view["data"]]
    for body in ({}, {"model": ""}, {"model": SMOL, "extra": 1}, {"model": "m" * 201}):
        assert_openai_error(gateway.post("/api/admin/instances", json=body, headers=AUTH), 400)
    assert_openai_error(gateway.post("/api/admin/instances", json={"model": "no-such-model"}, headers=AUTH),
                        404, "model_not_found")
    assert_openai_error(gateway.delete("/api/admin/instances/no-such-instance", headers=AUTH), 404,
                        "instance_not_found", "instance_id")
    assert_openai_error(gateway.post("/api/admin/instances/restart", json={"model": SMOL}, headers=AUTH), 503,
                        "fleet_control_not_configured")


@pytest.fixture
def actions(gateway):
    """The gateway's fleet is GitHub Actions: its real client, talking to the fake GitHub."""
    fake = FakeGitHub("arena/fleet", "actions-token")
    client = GitHubClient("arena/fleet", "actions-token", transport=httpx.MockTransport(fake.handle), attempts=1)
    gateway.app.state.instance_control.backend = ActionsFleet(client)
    gateway.app.state.instance_control_fleet = {"kind": "actions", "message": None, "repository": "arena/fleet",
                                                "workflow": "fleet.yml"}
    return gateway, fake


def register(gateway, instance_id: str, port: int = 9) -> None:
    answer = gateway.post("/api/instances", headers={"Authorization": f"Bearer {REG_TOKEN}"},
                          json={"model": SMOL, "instance_id": instance_id, "url": f"http://127.0.0.1:{port}"})
    assert answer.status_code in (200, 201), answer.text


def test_on_actions_start_dispatches_the_runner_workflow_and_stop_cancels_exactly_its_run(actions):
    gateway, fake = actions
    started = gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH)
    assert started.status_code == 202, started.text
    dispatch = started.json()["dispatch"]
    assert fake.requests[-1] == "POST /repos/arena/fleet/actions/workflows/fleet.yml/dispatches"
    sent = fake.dispatches[-1]
    assert sent["ref"] == "main" and sent["inputs"]["model"] == SMOL and sent["inputs"]["instances"] == "1"
    assert sent["inputs"]["instance"] == "1" and sent["inputs"]["instance_id"] == dispatch["expected_instance_id"]
    first_run = fake.runs[-1]
    assert dispatch["html_url"] == f"https://github.com/arena/fleet/actions/runs/{first_run.id}"
    view = gateway.get("/api/admin/instances", headers=AUTH).json()
    smol = next(m for m in view["data"] if m["key"] == SMOL)
    assert [d["state"] for d in smol["dispatches"]] == ["dispatched"]

    # A second start takes the next free instance label.
    second = gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH).json()["dispatch"]
    assert fake.dispatches[-1]["inputs"]["instance"] == "2"

    # The first runner registers: its dispatch is done; stopping it cancels its run only.
    register(gateway, dispatch["expected_instance_id"])
    wait_until(lambda: len(next(m for m in gateway.get("/api/admin/instances", headers=AUTH).json()["data"]
                                if m["key"] == SMOL)["dispatches"]) == 1, 10, what="the first dispatch done")
    stopped = gateway.delete(f"/api/admin/instances/{dispatch['expected_instance_id']}", headers=AUTH)
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["instance"]["state"] == "draining"
    assert f"POST /repos/arena/fleet/actions/runs/{first_run.id}/cancel" in fake.requests
    assert first_run.conclusion == "cancelled" and fake.runs[-1].status != "completed"

    # An instance no run of ours carries cannot be stopped from here.
    register(gateway, "someone-elses-instance", port=10)
    assert_openai_error(gateway.delete("/api/admin/instances/someone-elses-instance", headers=AUTH), 409,
                        "run_not_found")

    # Unload cancels every active run of the model (the second, still waiting for its runner).
    unloaded = gateway.post(f"/v1/models/{SMOL}", params={"action": "unload"}, headers=AUTH)
    assert unloaded.status_code == 202, unloaded.text
    assert unloaded.json()["cancelled_runs"] == [f"https://github.com/arena/fleet/actions/runs/{fake.runs[-1].id}"]
    assert unloaded.json()["not_stopped"] == ["someone-elses-instance"]
    assert all(run.status == "completed" for run in fake.runs)
    assert second["expected_instance_id"] != dispatch["expected_instance_id"]

    audit = gateway.get("/api/admin/audit", headers=AUTH).json()["data"]
    assert [e["action"] for e in audit][:4] == ["model.unload", "instance.stop", "instance.start", "instance.start"]
    assert all(ADMIN not in str(e) for e in audit)


def test_on_actions_github_refusing_is_a_clear_error(actions):
    gateway, fake = actions
    fake.token = "another-token"  # ours is now refused: Bad credentials
    error = assert_openai_error(gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH), 502,
                                "github_failed")
    assert "invalid or expired" in error["message"] and "actions-token" not in error["message"]


@pytest.fixture
def garbled_supervisor():
    """A supervisor's control channel on 127.0.0.1 that answers what `answers[path]` holds:
    (status, body bytes), whatever the request."""
    answers: dict[str, tuple[int, bytes]] = {}
    seen: list[str] = []
    slow = threading.Event()  # set: answers wait a while (a start that takes time)

    class Garbled(QuietHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.command} {self.path}")
            if slow.is_set():
                threading.Event().wait(0.5)
            status, body = answers.get("/" + self.path.strip("/").split("/")[0], (200, b"{}"))
            self.reply(status, {"Content-Type": "application/json"}, body)

        do_GET = do_POST = do_DELETE = answer

    with LoopbackServer(Garbled, "garbled-supervisor") as server:
        answers["seen"], answers["slow"] = seen, slow  # type: ignore[assignment]
        yield server.url, answers


GARBAGE = [b"not json at all", b"[1, 2, 3]", b'{"instance_id": 5, "url": "http://127.0.0.1:1"}',
           b'{"instance_id": "x", "model": "m", "state": "running", "url": "javascript:alert(1)"}',
           b'{"instance_id": "x", "model": "m", "state": "running"}', b"null"]


def test_a_garbled_answer_of_the_supervisor_is_a_502_that_says_so(garbled_supervisor, gateway):
    import asyncio

    from gateway.instance_control.backends import LocalSupervisor
    from gateway.instance_control.errors import SupervisorBadAnswer

    url, answers = garbled_supervisor
    control = gateway.app.state.instance_control
    control.backend = LocalSupervisor(url, "control-token-0123456789")
    for body in GARBAGE:
        answers["/instances"] = (200, body)
        for response in (gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH),
                         gateway.post(f"/v1/models/{SMOL}", params={"action": "load"}, headers=AUTH)):
            error = assert_openai_error(response, 502, "bad_supervisor_answer")
            assert "supervisor" in error["message"]
    answers["/instances"] = (500, b"<html>oops</html>")  # an error that is not the channel's either
    error = assert_openai_error(gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH), 502,
                                "bad_supervisor_answer")
    assert "HTTP 500" in error["message"]
    answers["/instances"] = (200, b'{"object": "list", "data": [{"instance_id": 1}]}')

    async def watch_once() -> None:
        supervisor = LocalSupervisor(url, "control-token-0123456789")
        try:
            await supervisor.processes()
        finally:
            await supervisor.close()

    with pytest.raises(SupervisorBadAnswer):  # the background watch sees the same clear error
        asyncio.run(watch_once())
    assert gateway.get("/api/admin/instances", headers=AUTH).status_code == 200


def test_two_loads_at_once_start_one_instance(garbled_supervisor, gateway):
    import asyncio

    from gateway.instance_control.backends import LocalSupervisor

    url, answers = garbled_supervisor
    answers["/instances"] = (200, b'{"instance_id": "smol-9", "model": "smollm2-135m", "state": "running", '
                                  b'"url": "http://127.0.0.1:9"}')
    answers["slow"].set()  # the supervisor takes half a second to start a process
    control = gateway.app.state.instance_control

    async def two_loads() -> list[dict]:
        control.backend = LocalSupervisor(url, "control-token-0123456789")
        try:
            return await asyncio.gather(control.load(SMOL), control.load(SMOL))
        finally:
            await control.backend.close()

    results = asyncio.run(two_loads())
    assert [r["status"] for r in results] == ["loading", "loading"]
    assert sum(r["started"] is not None for r in results) == 1
    assert [s for s in answers["seen"] if s.startswith("POST")] == ["POST /instances"]
    assert control._loading == {} and control._lock_users == {}  # the model's lock went with its loads


def test_a_delete_during_a_load_is_refused_and_a_load_during_a_delete_finds_the_model_gone(garbled_supervisor, gateway):
    import asyncio

    url, answers = garbled_supervisor
    answers["/instances"] = (200, (b'{"instance_id": "late-0", "model": "late", "state": "running", '
                                   b'"url": "http://127.0.0.1:9"}'))
    answers["slow"].set()  # the supervisor takes half a second to start a process
    control, overlay = gateway.app.state.instance_control, gateway.app.state.catalogue_overlay
    control.backend = LocalSupervisor(url, "control-token-0123456789")
    for key in ("late", "gone"):
        gateway.portal.call(overlay.add_model, overlay.new_model_spec({"key": key, "source": "hub:o/r:Q8_0"}))

    loaded: list[httpx.Response] = []
    load = threading.Thread(target=lambda: loaded.append(
        gateway.post("/v1/models/late", params={"action": "load"}, headers=AUTH)))
    load.start()
    wait_until(lambda: "POST /instances" in answers["seen"], 10, what="the supervisor asked to start late")
    # The load is inside the supervisor's start: its instance is not registered yet.
    assert_openai_error(gateway.delete("/api/admin/models/late", headers=AUTH), 409, "model_has_instances", "model")
    load.join(10)
    assert loaded[0].status_code == 202, loaded[0].text
    assert "late" in overlay.effective_catalogue().models

    async def load_during_a_removal() -> BaseException | dict:
        async with control.removal("gone"):
            loading = asyncio.ensure_future(control.load("gone"))
            await asyncio.sleep(0)  # one turn of the loop: the load now waits on the removal
            assert control._lock_users["gone"] == 2
            await overlay.remove_model("gone")
        return (await asyncio.gather(loading, return_exceptions=True))[0]

    result = gateway.portal.call(load_during_a_removal)
    assert isinstance(result, ModelNotFound) and answers["seen"].count("POST /instances") == 1
    assert control._loading == {} and control._lock_users == {}


def test_a_supervisor_that_cannot_start_now_is_a_5xx_with_its_code(garbled_supervisor, gateway):
    url, answers = garbled_supervisor
    gateway.app.state.instance_control.backend = LocalSupervisor(url, "control-token-0123456789")
    for status, code in ((503, "no_free_port"), (503, "fleet_stopping"), (500, "Not A Code!")):
        answers["/instances"] = (status, json.dumps({"error": {"message": "it cannot", "type": "x", "param": None,
                                                               "code": code}}).encode())
        for response in (gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH),
                         gateway.post(f"/v1/models/{SMOL}", params={"action": "load"}, headers=AUTH)):
            error = assert_openai_error(response, status, code if code.islower() else "fleet_unavailable")
            assert "it cannot" in error["message"]
    answers["/instances"] = (409, b'{"error": {"message": "too many", "code": "too_many_instances"}}')
    assert_openai_error(gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH), 409, "fleet_refused")
