"""The supervisor's control channel over real HTTP, refusing what it must (no model process is
started here: `test_local_fleet_control.py` starts real ones)."""

from __future__ import annotations

import httpx
import pytest

from shared.catalogue import load_catalogue
from shared.fleet_control import CONTROL_TOKEN_ENV, CONTROL_URL_ENV, ControlServer
from shared.local_fleet import LocalFleet
from tests.harness import assert_openai_error


@pytest.fixture
def channel(tmp_path):
    fleet = LocalFleet(load_catalogue(), {"smollm2-135m": 1}, host="127.0.0.1", port=1, log_dir=tmp_path)
    server = ControlServer(fleet).start()
    try:
        yield fleet, server
    finally:
        server.stop()


def test_only_the_gateway_child_gets_the_channel(tmp_path):
    fleet = LocalFleet(load_catalogue(), {"smollm2-135m": 1}, host="127.0.0.1", port=1, log_dir=tmp_path)
    fleet.control = ControlServer(fleet)
    try:
        fleet.gateway.env.update(fleet.control.child_env())
        assert fleet.gateway.env[CONTROL_URL_ENV].startswith("http://127.0.0.1:")
        assert len(fleet.gateway.env[CONTROL_TOKEN_ENV]) >= 32
        for member in fleet.instances:
            assert CONTROL_TOKEN_ENV not in member.process.env and CONTROL_URL_ENV not in member.process.env
    finally:
        fleet.control.stop()


def test_the_channel_wants_its_token(channel):
    fleet, server = channel
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.token}):
        assert_openai_error(httpx.get(server.url + "/instances", headers=headers), 401, "invalid_control_token")
    listed = httpx.get(server.url + "/instances", headers={"Authorization": f"Bearer {server.token}"}).json()
    assert [(p["instance_id"], p["model"], p["state"]) for p in listed["data"]] == [("smollm2-135m-0", "smollm2-135m",
                                                                                     "exited")]


def test_bad_requests_are_refused_and_start_nothing(channel):
    fleet, server = channel
    auth = {"Authorization": f"Bearer {server.token}"}
    post = lambda **kw: httpx.post(server.url + "/instances", headers=auth, **kw)  # noqa: E731
    assert_openai_error(post(content=b"not json"), 400, "invalid_json")
    assert_openai_error(post(json=["a list"]), 400, "invalid_json")
    assert_openai_error(post(json={"spec": {}}), 400, "invalid_request")
    assert_openai_error(post(json={"model": "no-such-model"}), 404, "model_not_found")
    assert_openai_error(post(json={"model": "new-model", "spec": {"n_ctx": 1}}), 400, "invalid_spec")
    assert_openai_error(post(content=b"{" + b" " * 70_000 + b"}"), 413, "body_too_large")
    assert_openai_error(httpx.delete(server.url + "/instances/nope", headers=auth), 404, "instance_not_found")
    assert_openai_error(httpx.delete(server.url + "/instances/../etc", headers=auth), 404, "not_found")
    assert len(fleet.instances) == 1


def test_a_spec_from_the_gateway_reaches_the_process_as_its_catalogue(tmp_path):
    """A runtime spec (e.g. the overlay's) is written into the process's own catalogue file."""
    catalogue = load_catalogue()
    fleet = LocalFleet(catalogue, {}, host="127.0.0.1", port=1, log_dir=tmp_path, control=False)
    spec = catalogue.model("smollm2-135m").model_copy(update={"n_ctx": 1024, "key": "smollm2-copy"})
    path = fleet._catalogue_with("smollm2-copy-0", spec)
    written = load_catalogue(path)
    assert written.model("smollm2-copy").n_ctx == 1024
    assert written.model("smollm2-copy").source == spec.source
    assert written.model("smollm2-135m") == catalogue.model("smollm2-135m")


def test_a_runners_model_service_never_sees_the_fleet_control_tokens():
    from scripts.child_env import gateway_env, service_env

    environ = {"ARENA_FLEETCTL_GITHUB_TOKEN": "ghp-secret", CONTROL_TOKEN_ENV: "control-secret", "PATH": "/bin"}
    assert service_env(environ) == {"PATH": "/bin"}
    assert gateway_env(environ) == environ
