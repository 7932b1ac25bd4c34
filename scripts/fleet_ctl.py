"""`make fleet-up` / `fleet-status` / `fleet-down`: drive the fleet on GitHub Actions with `gh`.

    python -m scripts.fleet_ctl up [MODEL ...] [--no-gateway] [--duration-hours H]
    python -m scripts.fleet_ctl status
    python -m scripts.fleet_ctl down [MODEL ...] [--no-gateway]

Runs are matched by the exact labels in their titles (scripts/fleet_labels.py): `down
smollm2-135m` never touches a `smollm2-135m-q8` run, and `up` skips a model that already has
an active run, so running it twice does not start a second chain.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict

from scripts.fleet_labels import GATEWAY_LABEL, RunLabels, parse_title

FLEET_WORKFLOW = "fleet.yml"
GATEWAY_WORKFLOW = "gateway.yml"
ACTIVE = {"queued", "in_progress", "waiting", "requested", "pending"}


class GhError(RuntimeError):
    pass


def gh(*args: str) -> str:
    binary = shutil.which("gh")
    if not binary:
        raise GhError("the GitHub CLI `gh` is not installed (https://cli.github.com), or not on PATH")
    done = subprocess.run([binary, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise GhError(f"gh {' '.join(args[:3])} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def active_runs(workflow: str) -> list[tuple[RunLabels, dict]]:
    runs = json.loads(gh("run", "list", "--workflow", workflow, "--limit", "200",
                         "--json", "databaseId,displayTitle,status,conclusion,url,createdAt") or "[]")
    found = []
    for run in runs:
        labels = parse_title(run.get("displayTitle"))
        if labels is not None and run.get("status") in ACTIVE:
            found.append((labels, run))
    return found


def up(models: list[str], *, gateway: bool, duration: str | None) -> int:
    from shared.catalogue import default_catalogue

    catalogue = default_catalogue()
    keys = models or [key for key, spec in catalogue.models.items() if spec.instances_for("actions") > 0]
    running = active_runs(FLEET_WORKFLOW)
    if gateway:
        if any(labels.model == GATEWAY_LABEL for labels, _ in active_runs(GATEWAY_WORKFLOW)):
            print("gateway: already running")
        else:
            gh("workflow", "run", GATEWAY_WORKFLOW, *(["-f", f"duration_hours={duration}"] if duration else []))
            print("gateway: started")
    for key in keys:
        spec = catalogue.model(key)
        if any(labels.model == key for labels, _ in running):
            print(f"{key}: already running (see `make fleet-status`)")
            continue
        instances = max(1, min(3, spec.instances_for("actions")))
        args = ["workflow", "run", FLEET_WORKFLOW, "-f", f"model={key}", "-f", f"instances={instances}"]
        if duration:
            args += ["-f", f"duration_hours={duration}"]
        gh(*args)
        print(f"{key}: started {instances} instance(s)")
    return 0


def status() -> int:
    rows = active_runs(GATEWAY_WORKFLOW) + active_runs(FLEET_WORKFLOW)
    if not rows:
        print("no fleet run is active; start one with `make fleet-up`")
        return 0
    by_model: dict[str, list[str]] = defaultdict(list)
    for labels, run in rows:
        by_model[labels.model].append(
            f"  instance {labels.instance:<3} id {labels.instance_id or '-':<28} {run['status']:<12} {run['url']}")
    for model in sorted(by_model):
        print(model)
        print("\n".join(by_model[model]))
    return 0


def down(models: list[str], *, gateway: bool) -> int:
    targets = set(models)
    rows = active_runs(FLEET_WORKFLOW) + (active_runs(GATEWAY_WORKFLOW) if gateway else [])
    cancelled = 0
    for labels, run in rows:
        if labels.model == GATEWAY_LABEL and not gateway:
            continue
        if targets and labels.model not in targets and labels.model != GATEWAY_LABEL:
            continue
        gh("run", "cancel", str(run["databaseId"]))
        print(f"cancelled {run['displayTitle']} ({run['url']})")
        cancelled += 1
    if not cancelled:
        print("nothing to cancel")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.fleet_ctl")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("models", nargs="*")
    p_up.add_argument("--no-gateway", dest="gateway", action="store_false")
    p_up.add_argument("--duration-hours", default=None)
    sub.add_parser("status")
    p_down = sub.add_parser("down")
    p_down.add_argument("models", nargs="*")
    p_down.add_argument("--no-gateway", dest="gateway", action="store_false")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(args.models, gateway=args.gateway, duration=args.duration_hours)
        if args.command == "status":
            return status()
        # With models named, the gateway stays up unless asked.
        return down(args.models, gateway=args.gateway and not args.models)
    except GhError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
