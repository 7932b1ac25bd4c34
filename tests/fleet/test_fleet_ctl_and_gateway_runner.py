"""fleet-up/status/down through a fake `gh` on PATH, and the gateway runner's pieces."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import respx

from scripts import fleet_ctl, gateway_runner
from scripts.fleet_labels import RunLabels
from scripts.github_api import GitHubClient
from tests.harness import free_port

FAKE_GH = """#!{python}
import json, sys
from pathlib import Path
state = Path({state!r})
calls = json.loads(state.read_text()) if state.exists() else []
calls.append(sys.argv[1:])
state.write_text(json.dumps(calls))
if sys.argv[1:3] == ["run", "list"]:
    workflow = sys.argv[sys.argv.index("--workflow") + 1]
    print(json.dumps(json.loads(Path({runs!r}).read_text()).get(workflow, [])))
"""


def install_gh(tmp_path, monkeypatch, runs: dict) -> Path:
    calls = tmp_path / "calls.json"
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    gh = tmp_path / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable, state=str(calls), runs=str(tmp_path / "runs.json")))
    gh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return calls


def run(run_id: int, labels: RunLabels, status: str = "in_progress") -> dict:
    return {"databaseId": run_id, "displayTitle": labels.title(), "status": status, "conclusion": "",
            "url": f"https://github.com/o/r/actions/runs/{run_id}", "createdAt": "2026-11-22T02:00:00Z"}


def test_up_starts_only_what_is_not_running(tmp_path, monkeypatch, capsys):
    calls = install_gh(tmp_path, monkeypatch, {"fleet.yml": [
        run(1, RunLabels("smollm2-135m", "all")),
        run(2, RunLabels("gemma3-270m", "1", "old"), status="completed")]})
    assert fleet_ctl.main(["up"]) == 0
    starts = [c for c in json.loads(calls.read_text()) if c[:2] == ["workflow", "run"]]
    assert starts == [["workflow", "run", "gateway.yml"],
                      ["workflow", "run", "fleet.yml", "-f", "model=gemma3-270m", "-f", "instances=1"]]
    assert "smollm2-135m: already running" in capsys.readouterr().out


def test_down_cancels_exact_labels_only(tmp_path, monkeypatch):
    calls = install_gh(tmp_path, monkeypatch, {"fleet.yml": [
        run(1, RunLabels("smollm2-135m", "1", "a")),
        run(2, RunLabels("smollm2-135m-q8", "1", "b")),
        run(3, RunLabels("smollm2-135m", "2", "c"), status="queued"),
        {**run(4, RunLabels("x", "1")), "displayTitle": "smollm2-135m by hand"}],
        "gateway.yml": [run(9, RunLabels("gateway", "1", "g"))]})
    assert fleet_ctl.main(["down", "smollm2-135m"]) == 0
    cancels = [c[2] for c in json.loads(calls.read_text()) if c[:2] == ["run", "cancel"]]
    assert cancels == ["1", "3"]
    assert fleet_ctl.main(["down"]) == 0
    cancels = [c[2] for c in json.loads(calls.read_text()) if c[:2] == ["run", "cancel"]]
    assert cancels[2:] == ["1", "2", "3", "9"]


def test_status_and_missing_gh(tmp_path, monkeypatch, capsys):
    install_gh(tmp_path, monkeypatch, {"fleet.yml": [run(5, RunLabels("gemma3-270m", "1", "gemma3-270m.1.ab"))]})
    assert fleet_ctl.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m" in out and "gemma3-270m.1.ab" in out
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert fleet_ctl.main(["status"]) == 1
    assert "`gh` is not installed" in capsys.readouterr().err


@respx.mock
def test_successor_gateway_is_ready_when_its_named_step_succeeded():
    jobs = "https://api.github.com/repos/o/r/actions/runs/77/jobs"
    step = {"name": gateway_runner.READY_STEP, "status": "in_progress", "conclusion": None, "number": 8}
    respx.get(jobs).mock(side_effect=[
        httpx.Response(200, json={"total_count": 1, "jobs": [{"id": 1, "run_id": 77, "name": "gateway",
                                                              "status": "in_progress", "steps": [step]}]}),
        httpx.Response(200, json={"total_count": 1, "jobs": [{"id": 1, "run_id": 77, "name": "gateway",
                                                              "status": "in_progress", "steps": [
                                                                  {**step, "status": "completed",
                                                                   "conclusion": "success"}]}]})])
    with GitHubClient("o/r", "t0ken-abcdef", backoff=0) as gh:
        assert gh.step_succeeded(77, gateway_runner.READY_STEP) is False
        assert gh.step_succeeded(77, gateway_runner.READY_STEP) is True


def test_snapshot_is_a_consistent_copy_of_a_live_database(tmp_path):
    db = tmp_path / "gateway.sqlite3"
    live = sqlite3.connect(db)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY, winner TEXT)")
    live.executemany("INSERT INTO votes (winner) VALUES (?)", [("a",), ("b",)])
    live.commit()                       # still open, the WAL not checkpointed
    out = tmp_path / "snap" / "gateway.sqlite3"
    assert gateway_runner.main(["snapshot", "--db", str(db), "--out", str(out)]) == 0
    live.close()
    assert sqlite3.connect(out).execute("SELECT count(*) FROM votes").fetchone() == (2,)


def test_background_gateway_serves_reports_ready_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "state.json"
    port = free_port()
    env = {**os.environ, "ARENA_REGISTRATION_TOKEN": "gw-runner-token",
           "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_GATEWAY_DB_PATH": str(tmp_path / "gw.sqlite3")}
    child = subprocess.Popen([sys.executable, "-m", "scripts.gateway_runner", "serve", "--state", str(state),
                              "--port", str(port), "--tunnel", "none", "--ready-timeout", "60"],
                             cwd=Path(__file__).resolve().parents[2], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
