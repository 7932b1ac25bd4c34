"""The runner agent's failure paths, end to end: a real gateway and model service, and GitHub
played by a local HTTP server that is slow and answers like GitHub does to a bad token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from scripts.runner_agent import EXIT_FAILED, EXIT_NO_SUCCESSOR, Timeline, service_process
from shared.processes import ChildProcess
from tests.harness import PROJECT_ROOT, ManagedProcess, free_port
from tests.loopback import LoopbackServer, QuietHandler

MODEL = "smollm2-135m"
TOKEN = "agent-test-registration-token"
SECRET = "agent-test-instance-secret"
PAT = "github_pat_11AAAAAAA0000000000000000000000000000000000"
GITHUB_DELAY = 25.0


class SlowBadCredentialsGitHub(QuietHandler):
    """GitHub on a bad day: every answer takes GITHUB_DELAY seconds, then says Bad credentials."""

    calls: list[str] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        type(self).calls.append(f"POST {self.path}")
        time.sleep(GITHUB_DELAY)
        body = json.dumps({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                           "status": "401"}).encode()
        try:
            self.reply(401, {"Content-Type": "application/json; charset=utf-8"}, body)
        except OSError:
            pass            # the agent is gone


def test_timeline_handoff_before_hard_limit():
    timeline = Timeline(started_at=1000.0, duration_hours=0.5, margin_minutes=10)
    assert timeline.hard_limit == 1000.0 + 1800
    assert timeline.handoff_at == 1000.0 + 1200
    assert Timeline(1000.0, 0.1, 60).handoff_at == 1000.0      # margin longer than the run


@pytest.mark.parametrize("extra,env", [([], {"GITHUB_ACTIONS": "true"}), (["--tunnel", "named"], {})])
def test_refuses_to_start_on_a_public_url_without_an_instance_secret(extra, env):
    environ = {k: v for k, v in os.environ.items() if k not in ("ARENA_INSTANCE_SECRET", "GITHUB_ACTIONS")}
    done = subprocess.run([sys.executable, "-m", "shared.cli", "runner", MODEL, "--tunnel", "none", *extra,
                           "--gateway-url", "http://127.0.0.1:9"], cwd=PROJECT_ROOT, env={**environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert "ARENA_INSTANCE_SECRET is not set" in done.stderr


def test_the_model_service_sees_only_what_it_needs(tmp_path):
    environ = {"PATH": os.environ["PATH"], "HOME": "/home/runner", "ARENA_INSTANCE_SECRET": "s3cret-value",
               "ARENA_MODEL_SMOLLM2_135M__PARALLEL": "2", "HF_HOME": "/hf", "WORKFLOW_PAT": "p", "GITHUB_TOKEN": "g",
               "TUNNELS_JSON": "{}", "ARENA_REGISTRATION_TOKEN": "r", "ACTIONS_RUNTIME_TOKEN": "a",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "i", "CLOUDFLARE_API_TOKEN": "c"}
    service = service_process(MODEL, "127.0.0.1", 1, None, "m.1.x", environ)
    # The same environment, given to a probe instead of the model service.
    probe = ChildProcess("probe", [str(tmp_path / "env.json")], port=1, log_path=None, env=service.env,
                         inherit_env=service.inherit_env, module="tests.fleet.env_probe").start()
    assert probe.process.wait(timeout=30) == 0
    seen = set(json.loads((tmp_path / "env.json").read_text()))
    assert {"ARENA_INSTANCE_SECRET", "ARENA_MODEL_SMOLLM2_135M__PARALLEL", "HF_HOME", "PATH"} <= seen
    assert not seen & {"WORKFLOW_PAT", "GITHUB_TOKEN", "TUNNELS_JSON", "ARENA_REGISTRATION_TOKEN",
                       "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "CLOUDFLARE_API_TOKEN"}, seen


@pytest.mark.slow
def test_a_slow_github_never_stops_the_serving_loop(tmp_path, gateways):
    """GitHub takes 25 s to refuse the dispatch. The dispatch runs off the serving loop, so the
    heartbeats go on and the instance stays ready to the hard limit (before: the loop waited on
    GitHub, the registration's 3 s TTL ran out, and the gateway dropped the instance)."""
    server = LoopbackServer(SlowBadCredentialsGitHub, "slow-github")
    env = {"ARENA_REGISTRATION_TOKEN": TOKEN, "ARENA_INSTANCE_SECRET": SECRET}
    gateway = gateways({**env, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_FLEET__DATA_DIR": str(tmp_path),
                        "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5"})
    port = free_port()
    agent = ManagedProcess("runner-slow-github", [
        "runner", MODEL, "--tunnel", "none", "--parallel", "2", "--port", str(port), "--heartbeat-seconds", "1",
        "--duration-hours", "0.005", "--margin-minutes", "0.2", "--successor", "github",
        "--gateway-url", gateway.url], port, {
        **env, "WORKFLOW_PAT": PAT, "GITHUB_REPOSITORY": "octo/arena",
        "GITHUB_API_URL": server.url, "GITHUB_ACTIONS": "true"})
    samples: list[tuple[float, bool]] = []
    try:
        started = time.monotonic()
        agent.start()
        with httpx.Client(base_url=gateway.url, timeout=5) as http:
            while agent.process.poll() is None and time.monotonic() - started < 120:
                states = [i["state"] for i in http.get("/api/instances").json()["data"]]
                samples.append((time.monotonic() - started, states == ["ready"]))
                time.sleep(0.3)      # the sampling period of this watch
            code = agent.wait_exit(timeout=60)
        log = agent.log_path.read_text()
        assert code == EXIT_NO_SUCCESSOR, log
        assert SlowBadCredentialsGitHub.calls == ["POST /repos/octo/arena/actions/workflows/fleet.yml/dispatches"]
        assert "no successor became ready before the hard limit" in log
        ready_times = [t for t, ready in samples if ready]
        assert ready_times, log
        first, last = ready_times[0], ready_times[-1]
        # Ready in every sample from the first to the last: no heartbeat was missed.
        assert all(ready for t, ready in samples if first <= t <= last), samples
        # The dispatch began ~6 s in and was still waiting on GitHub at the 18 s hard limit.
        assert last > 15, (samples, log)
        # The tokens only appear in the ::add-mask:: commands the runner consumes.
        assert log.count(PAT) == 1 and f"::add-mask::{PAT}" in log
        assert log.count(TOKEN) == 1
    finally:
        agent.stop()
        server.close()
