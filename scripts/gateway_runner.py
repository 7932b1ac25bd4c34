"""The gateway on a GitHub-hosted runner, in the same restart loop as the models.

The gateway workflow runs these steps; the gateway itself lives in a background process
(`serve`) that survives from step to step, so Actions steps can sit between its start and its
handoff (saving the SQLite snapshot to the cache needs an action step):

    serve        gateway + named tunnel; writes a state file; on SIGTERM stops the tunnel's
                 connector first (cloudflared finishes open requests within its grace period),
                 then drains the gateway
    wait-ready   the step named READY_STEP: returns once the state file says ready (the gateway
                 answers and its connector is registered with Cloudflare)
    wait-handoff returns at `duration - margin` (fails at once if the gateway died)
    restore      puts a snapshot of the data directory in place (before `serve`)
    snapshot     a consistent copy of the whole data directory: every SQLite file through the
                 sqlite3 backup API, every other file as it is
    handoff      dispatches gateway.yml for the successor, waits until the successor's
                 READY_STEP has succeeded, then stops this gateway; without a successor
                 it serves until the hard limit and says so

The handoff follows the model runners' pattern: the successor starts, connects to the same named
tunnel and becomes ready; for a while both connectors serve the hostname; then the predecessor's
connector stops taking requests, its open ones finish, and it exits.

Where the gateway keeps its data: with `ARENA_DATABASE_URL` (a repository secret) both gateways
of a handoff share one database and nothing is lost. Without it, each run has SQLite files in
its data directory, carried to the successor by a snapshot in the Actions cache: whatever the
predecessor writes after its snapshot (votes in the last minutes) is lost.
Model instances need nothing: a heartbeat answered 404 makes them register again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

from scripts.actions_log import JobLog
from scripts.child_env import gateway_env
from scripts.fleet_labels import GATEWAY_LABEL, RunLabels, new_instance_id
from scripts.github_api import (GitHubAuthError, GitHubClient, GitHubError, GitHubRateLimited, RunDispatch,
                                token_from_environment)
from scripts.runner_agent import require_instance_secret
from scripts.tunnel import MAX_GRACE_SECONDS, choose_tunnel
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
    # The gateway sees its own settings and secrets, never TUNNELS_JSON or a GitHub token.
    gateway = ChildProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(port)], port=port,
                           log_path=None, env=gateway_env(os.environ), inherit_env=False)
    try:
        require_instance_secret(os.environ, public=args.tunnel != "none")
        tunnel = choose_tunnel(args.tunnel, label=GATEWAY_LABEL, hostname=fleet.gateway_hostname,
                               local_url=gateway.url, base_domain=fleet.base_domain, job_log=log,
                               cloudflared=args.cloudflared, grace_seconds=args.tunnel_grace_seconds)
    except Exception as exc:  # noqa: BLE001 - a configuration error ends the run with one clear line
        log.error(str(exc))
        _write_state(state, status="stopped", stopped_at=time.time())
        return 1
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
        # Connector first: Cloudflare sends new requests to the successor's connector, while this
        # one finishes its open requests within cloudflared's grace period; then the gateway drains.
        tunnel.stop()
        gateway.stop(timeout=args.drain_timeout)
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


SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def snapshot_data_dir(source: Path, target: Path) -> list[Path]:
    """Copy the whole data directory: every SQLite file through the backup API (a consistent
    copy of a live database, its WAL included), every other file as it is. Returns the copies."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copied = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if path.name.endswith(SQLITE_SIDE_FILES):
            continue            # part of its database, which the backup reads whole
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if _is_sqlite(path):
            with sqlite3.connect(path) as src, sqlite3.connect(out) as dst:
                src.backup(dst)
        else:
            shutil.copy2(path, out)
        copied.append(out)
    return copied


def snapshot(args: argparse.Namespace, log: JobLog) -> int:
    if os.environ.get("ARENA_DATABASE_URL"):
        log.info("the gateway keeps its data at ARENA_DATABASE_URL; no snapshot needed")
        return 0
    source, target = Path(args.data_dir), Path(args.out)
    if not source.is_dir():
        log.warning(f"no data directory at {source} yet; nothing to keep")
        return 0
    copied = snapshot_data_dir(source, target)
    log.info(f"snapshot of {source} in {target}: " + ", ".join(
        f"{p.relative_to(target)} ({p.stat().st_size} bytes)" for p in copied))
    return 0


def restore(args: argparse.Namespace, log: JobLog) -> int:
    source, target = Path(args.snapshot), Path(args.data_dir)
    if not source.is_dir() or not any(source.iterdir()):
        log.info("no snapshot to restore: the gateway starts with an empty data directory")
        return 0
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, dirs_exist_ok=True)
    log.info(f"restored {sum(1 for p in source.rglob('*') if p.is_file())} file(s) from {source} into {target}")
    return 0


def _stop_background(state: Path, log: JobLog, timeout: float = MAX_GRACE_SECONDS + 120) -> None:
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
    hard_limit, _ = _hard_limit(args)
    state = Path(args.state)
    log.mask(token_from_environment(os.environ)[1])
    if not args.auto_restart:
        while time.time() < hard_limit and _state(state).get("status") == "ready":
            time.sleep(5)
        _stop_background(state, log)
        return 0
    dispatch: RunDispatch | None = None
    with GitHubClient.from_environment(os.environ) as gh:
        while time.time() < hard_limit:
            wait = args.poll_seconds
            try:
                if dispatch is None:
                    labels = RunLabels(GATEWAY_LABEL, "1", new_instance_id(GATEWAY_LABEL, "1"))
                    dispatch = RunDispatch(gh, WORKFLOW, args.ref, {
                        "instance_id": labels.instance_id, "duration_hours": f"{args.duration_hours:g}",
                        "auto_restart": "true"}, labels)
                    dispatch.dispatch()
                    log.info(f"successor dispatched: {dispatch.describe()}")
                else:
                    status = dispatch.check()
                    if status == RunDispatch.RUNNING and gh.step_succeeded(dispatch.run_id, READY_STEP):
                        log.info("the successor gateway is ready on the tunnel; this one stops taking requests")
                        _stop_background(state, log)
                        return 0
                    if status in (RunDispatch.ENDED, RunDispatch.LOST):
                        log.error(f"successor {dispatch.describe()} {status} before it was ready; dispatching another")
                        dispatch = None
            except GitHubRateLimited as exc:
                wait = max(wait, exc.retry_after or 60.0)
                log.warning(f"handoff: {exc}")
            except GitHubAuthError as exc:
                # A bad token stays bad: say so once, and serve to the hard limit.
                log.error(f"handoff: no successor can be dispatched: {exc}")
                wait = hard_limit - time.time()
            except GitHubError as exc:
                log.error(f"handoff: {exc}")
            time.sleep(max(0.0, min(wait, hard_limit - time.time())))
    log.error("no successor gateway became ready before the hard limit; this gateway stops now")
    _stop_background(state, log)
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gateway_runner")
    parser.add_argument("command", choices=["serve", "wait-ready", "wait-handoff", "restore", "snapshot", "handoff"])
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
    parser.add_argument("--data-dir", default=os.environ.get("ARENA_FLEET__DATA_DIR", "data"),
                        help="the gateway's data directory (every SQLite file in it is kept)")
    parser.add_argument("--out", default="", help="snapshot: where the copy goes")
    parser.add_argument("--snapshot", default="", help="restore: the snapshot to put in place")
    parser.add_argument("--tunnel-grace-seconds", type=float, default=MAX_GRACE_SECONDS,
                        help=f"cloudflared's --grace-period (at most {MAX_GRACE_SECONDS:.0f} s)")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="the gateway's own drain")
    parser.add_argument("--poll-seconds", type=float, default=60.0,
                        help="how often the successor's run is looked at on GitHub")
    args = parser.parse_args(argv)
    args.started_at = args.started_at or time.time()
    log = JobLog(prefix="gateway")
    for name in ("ARENA_REGISTRATION_TOKEN", "ARENA_INSTANCE_SECRET", "ARENA_GATEWAY_ADMIN_KEY", "ARENA_DATABASE_URL"):
        log.mask(os.environ.get(name))
    command = {"serve": serve, "wait-ready": wait_ready, "wait-handoff": wait_handoff, "restore": restore,
               "snapshot": snapshot, "handoff": handoff}[args.command]
    return command(args, log)


if __name__ == "__main__":
    sys.exit(main())
