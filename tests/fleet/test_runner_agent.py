"""The runner agent's failure paths, end to end: a real gateway and model service, and GitHub
played by a local HTTP server that answers like GitHub does to a bad token."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from scripts.runner_agent import EXIT_NO_SUCCESSOR, Timeline
from tests.harness import ManagedProcess, free_port, start_gateway

MODEL = "smollm2-135m"
TOKEN = "agent-test-registration-token"
PAT = "github_pat_11AAAAAAA0000000000000000000000000000000000"


class BadCredentialsGitHub(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        type(self).calls.append(f"POST {self.path}")
        body = json.dumps({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                           "status": "401"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_timeline_handoff_before_hard_limit():
    timeline = Timeline(started_at=1000.0, duration_hours=0.5, margin_minutes=10)
    assert timeline.hard_limit == 1000.0 + 1800
    assert timeline.handoff_at == 1000.0 + 1200
    assert Timeline(1000.0, 0.1, 60).handoff_at == 1000.0      # margin longer than the run


@pytest.mark.slow
def test_without_a_successor_it_serves_to_the_hard_limit_and_says_so(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BadCredentialsGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway = start_gateway(env={"ARENA_REGISTRATION_TOKEN": TOKEN, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                                 "ARENA_GATEWAY_DB_PATH": str(tmp_path / "gw.sqlite3"),
                                 "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5"})
    port = free_port()
    agent = ManagedProcess("runner-no-successor", [
        "runner", MODEL, "--tunnel", "none", "--parallel", "2", "--port", str(port), "--heartbeat-seconds", "2",
        "--duration-hours", "0.005", "--margin-minutes", "0.1", "--successor", "github",
        "--gateway-url", gateway.url], port, {
        "ARENA_REGISTRATION_TOKEN": TOKEN, "WORKFLOW_PAT": PAT, "GITHUB_REPOSITORY": "octo/arena",
        "GITHUB_API_URL": f"http://127.0.0.1:{server.server_address[1]}", "GITHUB_ACTIONS": "true"})
    try:
        started = time.monotonic()
        agent.start()
        ready_seen_at = None
        with httpx.Client(base_url=gateway.url, timeout=5) as http:
            while agent.process.poll() is None and time.monotonic() - started < 120:
                ready = [i for i in http.get("/api/instances").json()["data"] if i["state"] == "ready"]
                if ready:
                    ready_seen_at = time.monotonic()
                time.sleep(0.3)
            code = agent.wait_exit(timeout=60)
            instances = http.get("/api/instances").json()["data"]
        log = agent.log_path.read_text()
        assert code == EXIT_NO_SUCCESSOR, log
        assert BadCredentialsGitHub.calls == ["POST /repos/octo/arena/actions/workflows/fleet.yml/dispatches"]
        assert "::error title=runner smollm2-135m/1::could not launch the successor" in log
        assert "invalid or expired" in log and "no successor became ready before the hard limit" in log
        # It kept serving after the failed dispatch, to the end of its 18 s.
        assert ready_seen_at is not None and ready_seen_at - started > 14, log
        assert [i["state"] for i in instances] != ["ready"]        # deregistered at the end
        # The token only appears in the ::add-mask:: command the runner consumes.
        assert log.count(PAT) == 1 and f"::add-mask::{PAT}" in log
        assert log.count(TOKEN) == 1
    finally:
        agent.stop()
        gateway.stop()
        server.shutdown()
