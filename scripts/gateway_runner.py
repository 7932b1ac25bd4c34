"""The gateway on a GitHub-hosted runner, in the same restart loop as the models.

The gateway workflow runs these steps; the gateway itself lives in a background process
(`serve`) that survives from step to step, so Actions steps can sit between its start and its
handoff (saving the SQLite snapshot to the cache needs an action step):

    serve        gateway + tunnel; writes a state file; stops both on SIGTERM
    wait-ready   the step named READY_STEP: returns once the state file says ready
    wait-handoff returns at `duration - margin` (fails at once if the gateway died)
    snapshot     a consistent copy of the SQLite database (sqlite3 backup API)
    handoff      dispatches gateway.yml for the successor, waits until the successor's
                 READY_STEP has succeeded, then stops this gateway; without a successor
                 it serves until the hard limit and says so

A successor restores the newest snapshot (actions/cache, `gateway-db-` prefix). Votes written
between the snapshot and the handoff stay with the predecessor (a few minutes; logged).
Model instances need nothing: a heartbeat answered 404 makes them register again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path


from scripts.actions_log import JobLog
from scripts.fleet_labels import GATEWAY_LABEL, RunLabels, new_instance_id
from scripts.tunnel import choose_tunnel
from shared.processes import ChildProcess

READY_STEP = "Gateway ready"
WORKFLOW = "gateway.yml"


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, **values: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**_state(path), **values}))
    tmp.replace(path)


def serve(args: argparse.Namespace, log: JobLog) -> int:
    from shared.catalogue import load_catalogue

    fleet = load_catalogue().fleet
    state = Path(args.state)
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: stop.append(signal.Signals(signum).name))
    _write_state(state, status="starting", pid=os.getpid())
    port = args.port or fleet.gateway_port
    gateway = ChildProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(port)], port=port,
                           log_path=None)
    tunnel = choose_tunnel(args.tunnel, label=GATEWAY_LABEL, hostname=fleet.gateway_hostname,
                           local_url=gateway.url, base_domain=fleet.base_domain, job_log=log,
                           cloudflared=args.cloudflared)
    try:
        gateway.start().wait_ready("/health/live", args.ready_timeout,
                                   abort=lambda: f"signal {stop[0]}" if stop else None)
        public = tunnel.start(args.ready_timeout)
        _write_state(state, status="ready", public_url=public, ready_at=time.time())
        log.info(f"gateway ready at {public}")
        while not stop and gateway.running and tunnel.alive():
            time.sleep(0.5)
        if not stop:
            log.error(f"the gateway (exit {gateway.process.poll()}) or its tunnel (alive {tunnel.alive()}) died")
        return 0 if stop else 1
    except Exception as exc:  # noqa: BLE001
        log.error(str(exc))
        return 1
    finally:
        # Tunnel first: the successor's connector takes the traffic while this gateway finishes.
        tunnel.stop()
        gateway.stop(timeout=60)
        _write_state(state, status="stopped", stopped_at=time.time())


def wait_ready(args: argparse.Namespace, log: JobLog) -> int:
    state = Path(args.state)
    deadline = time.monotonic() + args.ready_timeout
    while time.monotonic() < deadline:
        current = _state(state)
        if current.get("status") == "ready":
            log.info(f"gateway ready at {current.get('public_url')}")
            return 0
        if current.get("status") == "stopped":
            break
        time.sleep(0.5)
    log.error("the gateway did not become ready")
    return 1


def _hard_limit(args: argparse.Namespace) -> tuple[float, float]:
    hard = args.started_at + args.duration_hours * 3600
    return hard, max(args.started_at, hard - args.margin_minutes * 60)


def wait_handoff(args: argparse.Namespace, log: JobLog) -> int:
    _, handoff_at = _hard_limit(args)
    while time.time() < handoff_at:
        if _state(Path(args.state)).get("status") != "ready":
            log.error("the gateway stopped before its handoff time")
            return 1
        time.sleep(min(5.0, max(0.1, handoff_at - time.time())))
    return 0


def snapshot(args: argparse.Namespace, log: JobLog) -> int:
    source, target = Path(args.db), Path(args.out)
    if not source.is_file():
        log.warning(f"no database at {source} yet; nothing to keep")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    log.info(f"database snapshot {target} ({target.stat().st_size} bytes)")
    return 0


def _stop_background(state: Path, log: JobLog, timeout: float = 90) -> None:
    pid = _state(state).get("pid")
    if not pid:
        return
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _state(state).get("status") != "stopped":
        time.sleep(0.5)
    log.info("this gateway has stopped")


def handoff(args: argparse.Namespace, log: JobLog) -> int:
    from scripts.github_api import GitHubClient, GitHubError

    hard_limit, _ = _hard_limit(args)
    state = Path(args.state)
    token_name = "WORKFLOW_PAT" if os.environ.get("WORKFLOW_PAT") else "GITHUB_TOKEN"
    log.mask(os.environ.get(token_name))
    if not args.auto_restart:
        while time.time() < hard_limit and _state(state).get("status") == "ready":
            time.sleep(5)
        _stop_background(state, log)
        return 0
    successor_id = new_instance_id(GATEWAY_LABEL, "1")
    run_id = None
    with GitHubClient(os.environ.get("GITHUB_REPOSITORY", ""), os.environ.get(token_name, ""),
                      token_name=token_name) as gh:
        while time.time() < hard_limit:
            try:
                if run_id is None:
                    result = gh.dispatch_workflow(WORKFLOW, args.ref, {
                        "instance_id": successor_id, "duration_hours": f"{args.duration_hours:g}",
                        "auto_restart": "true"})
                    run_id = result.run_id
                    if run_id is None:
                        runs = [r for r in gh.find_runs(WORKFLOW, model=GATEWAY_LABEL, instance="1")
                                if r.labels and r.labels.instance_id == successor_id]
                        run_id = runs[0].id if runs else None
                    log.info(f"successor {RunLabels(GATEWAY_LABEL, '1', successor_id).title()}: run {run_id}")
                elif gh.step_succeeded(run_id, READY_STEP):
                    log.info("the successor gateway is ready; stopping this one")
                    _stop_background(state, log)
                    return 0
                elif gh.get_run(run_id).status == "completed":
                    log.error(f"successor run {run_id} ended before it was ready; dispatching another")
                    successor_id, run_id = new_instance_id(GATEWAY_LABEL, "1"), None
            except GitHubError as exc:
                log.error(f"handoff: {exc}")
            time.sleep(10)
    log.error("no successor gateway became ready before the hard limit; this gateway stops now")
    _stop_background(state, log)
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gateway_runner")
    parser.add_argument("command", choices=["serve", "wait-ready", "wait-handoff", "snapshot", "handoff"])
    parser.add_argument("--state", default=str(Path.home() / "arena-gateway" / "state.json"))
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--tunnel", choices=["auto", "none"], default="auto")
    parser.add_argument("--cloudflared", default=None)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--started-at", type=float, default=None)
    parser.add_argument("--duration-hours", type=float, default=5.5)
    parser.add_argument("--margin-minutes", type=float, default=15.0)
    parser.add_argument("--no-auto-restart", dest="auto_restart", action="store_false")
    parser.add_argument("--ref", default=os.environ.get("GITHUB_REF_NAME") or "main")
    parser.add_argument("--db", default=os.environ.get("ARENA_GATEWAY_DB_PATH", ""))
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    args.started_at = args.started_at or time.time()
    log = JobLog(prefix="gateway")
    for name in ("ARENA_REGISTRATION_TOKEN", "ARENA_INSTANCE_SECRET", "ARENA_GATEWAY_ADMIN_KEY"):
        log.mask(os.environ.get(name))
    command = {"serve": serve, "wait-ready": wait_ready, "wait-handoff": wait_handoff,
               "snapshot": snapshot, "handoff": handoff}[args.command]
    return command(args, log)


if __name__ == "__main__":
    sys.exit(main())
