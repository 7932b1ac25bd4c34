"""fleet-up/status/down through the REST client (a stateful fake of GitHub), and the gateway runner."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts import fleet_ctl, gateway_runner
from scripts.fleet_labels import RunLabels
from scripts.github_api import GitHubClient
from tests.fleet.fake_github import FakeGitHub, answering
from shared.catalogue import load_catalogue
from tests.harness import free_port

REPO = "o/r"
TOKEN = "ghp_fleetctl000000000000"
ENV = {"GH_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def github():
    with answering(FakeGitHub(REPO, TOKEN)) as fake:
        yield fake


def test_up_starts_only_what_is_not_running(github, capsys):
    github.add_run("fleet.yml", RunLabels("smollm2-135m", "all").title())
    github.add_run("fleet.yml", RunLabels("gemma3-270m", "1", "old").title(), status="completed")
    assert fleet_ctl.main(["up"], environ=ENV) == 0
    # Every model the catalogue runs on Actions (the embedded ones and the lineup), but the one
    # already running, and the gateway.
    on_actions = [(key, spec.instances_for("actions")) for key, spec in load_catalogue(environ={}).models.items()
                  if spec.instances_for("actions") > 0 and key != "smollm2-135m"]
    assert [(d["workflow"], d["ref"], d["inputs"]) for d in github.dispatches] == [("gateway.yml", "main", {})] + [
        ("fleet.yml", "main", {"model": key, "instances": str(max(1, min(3, n)))}) for key, n in on_actions]
    assert {"model": "gemma3-270m", "instances": "1"} in [d["inputs"] for d in github.dispatches]
    assert "smollm2-135m: already running" in capsys.readouterr().out
    # Twice: nothing more is started.
    started = len(github.dispatches)
    assert fleet_ctl.main(["up"], environ=ENV) == 0
    assert len(github.dispatches) == started


def test_down_cancels_exact_labels_only(github):
    runs = [github.add_run("fleet.yml", RunLabels("smollm2-135m", "1", "a").title()),
            github.add_run("fleet.yml", RunLabels("smollm2-135m-q8", "1", "b").title()),
            github.add_run("fleet.yml", RunLabels("smollm2-135m", "2", "c").title(), status="queued"),
            github.add_run("fleet.yml", "smollm2-135m by hand"),
            github.add_run("gateway.yml", RunLabels("gateway", "1", "g").title())]
    assert fleet_ctl.main(["down", "smollm2-135m"], environ=ENV) == 0
    assert [r.conclusion for r in runs] == ["cancelled", None, "cancelled", None, None]
    assert fleet_ctl.main(["down"], environ=ENV) == 0
    assert [r.conclusion for r in runs] == ["cancelled", "cancelled", "cancelled", None, "cancelled"]


def test_status_and_missing_token(github, capsys, monkeypatch):
    github.add_run("fleet.yml", RunLabels("gemma3-270m", "1", "gemma3-270m.1.ab").title())
    assert fleet_ctl.main(["status"], environ=ENV) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m" in out and "gemma3-270m.1.ab" in out
    monkeypatch.setenv("PATH", "/nonexistent")       # no gh to ask for a stored login either
    assert fleet_ctl.main(["status"], environ={"GITHUB_REPOSITORY": REPO}) == 1
    assert "no GitHub token" in capsys.readouterr().err
    assert fleet_ctl.main(["status"], environ={**ENV, "GH_TOKEN": "ghp_wrong"}) == 1
    assert "invalid or expired" in capsys.readouterr().err


def test_successor_gateway_is_ready_when_its_named_step_succeeded(github):
    run = github.add_run("gateway.yml", RunLabels("gateway", "1", "g").title())
    step = {"name": gateway_runner.READY_STEP, "status": "in_progress", "conclusion": None, "number": 8}
    run.steps = [step]
    with GitHubClient(REPO, TOKEN, backoff=0) as gh:
        assert gh.step_succeeded(run.id, gateway_runner.READY_STEP) is False
        step.update(status="completed", conclusion="success")
        assert gh.step_succeeded(run.id, gateway_runner.READY_STEP) is True


def _live_sqlite(path: Path, table: str, rows: int) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany(f"INSERT INTO {table} (v) VALUES (?)", [(str(i),) for i in range(rows)])
    db.commit()                       # still open, the WAL not checkpointed
    return db


def test_snapshot_keeps_the_whole_data_directory_and_restore_puts_it_back(tmp_path):
    """Every SQLite file of the data directory (votes and gateway data are separate files), each
    a consistent copy of a live database; before, one file and the votes were lost."""
    data = tmp_path / "data"
    data.mkdir()
    gateway_db = _live_sqlite(data / "gateway.sqlite3", "keys", 2)
    votes_db = _live_sqlite(data / "arena.sqlite3", "votes", 5)
    (data / "notes.txt").write_text("kept as is")
    out = tmp_path / "snap"
    assert gateway_runner.main(["snapshot", "--data-dir", str(data), "--out", str(out)]) == 0
    gateway_db.close(), votes_db.close()
    assert sorted(p.name for p in out.iterdir()) == ["arena.sqlite3", "gateway.sqlite3", "notes.txt"]
    fresh = tmp_path / "fresh"
    assert gateway_runner.main(["restore", "--snapshot", str(out), "--data-dir", str(fresh)]) == 0
    assert sqlite3.connect(fresh / "arena.sqlite3").execute("SELECT count(*) FROM votes").fetchone() == (5,)
    assert sqlite3.connect(fresh / "gateway.sqlite3").execute("SELECT count(*) FROM keys").fetchone() == (2,)
    assert (fresh / "notes.txt").read_text() == "kept as is"


def test_no_snapshot_with_an_external_database(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_DATABASE_URL", "postgresql://arena@db.example/arena")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.sqlite3").write_bytes(b"")
    assert gateway_runner.main(["snapshot", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "s")]) == 0
    assert not (tmp_path / "s").exists()


def _serve(tmp_path: Path, state: Path, port: int, **extra_env: str) -> subprocess.Popen:
    env = {**os.environ, "ARENA_REGISTRATION_TOKEN": "gw-runner-token", "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
           "ARENA_FLEET__DATA_DIR": str(tmp_path / "data"), "WORKFLOW_PAT": "ghp_never_in_the_gateway",
           "TUNNELS_JSON": "{}", **extra_env}
    return subprocess.Popen([sys.executable, "-m", "scripts.gateway_runner", "serve", "--state", str(state),
                             "--port", str(port), "--tunnel", "none", "--ready-timeout", "60"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_background_gateway_serves_reports_ready_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "state.json"
    port = free_port()
    child = _serve(tmp_path, state, port)
    try:
        assert gateway_runner.main(["wait-ready", "--state", str(state), "--ready-timeout", "60"]) == 0
        assert httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200
        started = time.time()
        assert gateway_runner.main(["wait-handoff", "--state", str(state), "--started-at", str(started),
                                    "--duration-hours", "0.0005", "--margin-minutes", "0"]) == 0
        assert time.time() - started >= 1.5
        child.terminate()
        assert child.wait(timeout=60) == 0
        assert json.loads(state.read_text())["status"] == "stopped"
        # A gateway that stopped early fails the wait at once instead of waiting hours.
        assert gateway_runner.main(["wait-handoff", "--state", str(state), "--duration-hours", "1"]) == 1
    finally:
        if child.poll() is None:
            child.kill()


def test_handoff_dispatches_once_and_stops_this_gateway_when_the_successor_is_ready(tmp_path, github, monkeypatch):
    state = tmp_path / "state.json"
    child = _serve(tmp_path, state, free_port())
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    github.new_run_status = "in_progress"
    github.new_run_steps = [{"name": gateway_runner.READY_STEP, "status": "completed", "conclusion": "success"}]
    try:
        assert gateway_runner.main(["wait-ready", "--state", str(state), "--ready-timeout", "60"]) == 0
        assert gateway_runner.main(["handoff", "--state", str(state), "--duration-hours", "1",
                                    "--poll-seconds", "0.1", "--ref", "main"]) == 0
        assert child.wait(timeout=60) == 0
        assert json.loads(state.read_text())["status"] == "stopped"
        assert len(github.dispatches) == 1
        inputs = github.dispatches[0]["inputs"]
        assert set(inputs) == {"instance_id", "duration_hours", "auto_restart"}
        assert github.runs[0].title == f"arena-fleet model=gateway instance=1 id={inputs['instance_id']}"
    finally:
        if child.poll() is None:
            child.kill()


def test_the_gateway_refuses_a_public_start_without_an_instance_secret(tmp_path):
    state = tmp_path / "state.json"
    env = {k: v for k, v in os.environ.items() if k != "ARENA_INSTANCE_SECRET"}
    done = subprocess.run([sys.executable, "-m", "scripts.gateway_runner", "serve", "--state", str(state),
                           "--port", str(free_port()), "--tunnel", "auto"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "ARENA_INSTANCE_SECRET is not set" in done.stderr
    assert json.loads(state.read_text())["status"] == "stopped"


def test_the_gateway_child_sees_none_of_the_runners_github_credentials():
    from scripts.child_env import gateway_env, service_env

    environ = {"PATH": "/bin", "HOME": "/h", "WORKFLOW_PAT": "p", "GITHUB_TOKEN": "g", "TUNNELS_JSON": "{}",
               "ACTIONS_RUNTIME_TOKEN": "a", "ARENA_REGISTRATION_TOKEN": "r", "ARENA_INSTANCE_SECRET": "s",
               "ARENA_DATABASE_URL": "postgresql://x", "ARENA_FLEET__DATA_DIR": "/d", "HF_HOME": "/hf"}
    assert gateway_env(environ) == {k: environ[k] for k in (
        "PATH", "HOME", "ARENA_REGISTRATION_TOKEN", "ARENA_INSTANCE_SECRET", "ARENA_DATABASE_URL",
        "ARENA_FLEET__DATA_DIR", "HF_HOME")}
    assert service_env(environ) == {k: environ[k] for k in (
        "PATH", "HOME", "ARENA_INSTANCE_SECRET", "ARENA_FLEET__DATA_DIR", "HF_HOME")}


def test_the_gateway_hands_over_its_named_tunnel_within_the_grace_period(tmp_path):
    """On SIGTERM the connector goes first and is given its grace period (here 2 s, a request in
    flight keeps it that long), then the gateway drains; cloudflared never sees the runner's
    GitHub token or the other tunnels' tokens."""
    from tests.fleet.fake_cloudflared import make_fake

    record = tmp_path / "cloudflared.jsonl"
    binary = make_fake(tmp_path, mode="busy", record=record)
    state = tmp_path / "state.json"
    tunnels = {"gateway": {"token": "gw-tunnel-token-0000", "hostname": "arena.example.com"},
               "smollm2-135m": {"token": "model-tunnel-token-0000"}}
    env = {**os.environ, "ARENA_REGISTRATION_TOKEN": "gw-runner-token", "ARENA_INSTANCE_SECRET": "gw-instance-secret",
           "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_FLEET__DATA_DIR": str(tmp_path / "data"),
           "WORKFLOW_PAT": "ghp_never_in_cloudflared", "TUNNELS_JSON": json.dumps(tunnels)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "scripts.gateway_runner", "serve", "--state", str(state),
                                  "--port", str(free_port()), "--cloudflared", binary, "--tunnel-grace-seconds", "2",
                                  "--ready-timeout", "60"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert gateway_runner.main(["wait-ready", "--state", str(state), "--ready-timeout", "60"]) == 0, log.read_text()
        assert json.loads(state.read_text())["public_url"] == "https://arena.example.com"
        started = time.monotonic()
        child.terminate()
        assert child.wait(timeout=60) == 0, log.read_text()
        assert time.monotonic() - started >= 2          # the connector had its grace period
    finally:
        if child.poll() is None:
            child.kill()
    text = log.read_text()
    # The connector is registered before the gateway says ready, and gone before the gateway drains.
    assert text.index("Registered tunnel connection") < text.index("gateway ready at")
    assert text.index("Tunnel server stopped") < text.index("Shutting down")
    seen = json.loads(record.read_text().splitlines()[0])
    assert seen["argv"] == ["tunnel", "--no-autoupdate", "--grace-period", "2s", "run"]
    assert "TUNNEL_TOKEN" in seen["env"] and not {"WORKFLOW_PAT", "TUNNELS_JSON", "ARENA_REGISTRATION_TOKEN"} & set(
        seen["env"])
    assert "gw-tunnel-token-0000" not in text and "model-tunnel-token-0000" not in text
