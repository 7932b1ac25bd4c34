"""`make fleet-up` / `fleet-status` / `fleet-down`: drive the fleet on GitHub Actions through the
REST client (`scripts/github_api.py`), the one way this project talks to GitHub.

    python -m scripts.fleet_ctl up [MODEL ...] [--no-gateway] [--duration-hours H]
    python -m scripts.fleet_ctl status
    python -m scripts.fleet_ctl down [MODEL ...] [--no-gateway]

The token: `WORKFLOW_PAT`, `GITHUB_TOKEN` or `GH_TOKEN` from the environment, else the GitHub
CLI's stored login (`gh auth token`), if it is installed. The repository: `GITHUB_REPOSITORY`,
else the `origin` remote of this checkout.

Runs are matched by the exact labels in their titles (scripts/fleet_labels.py): `down
smollm2-135m` never touches a `smollm2-135m-q8` run, and `up` skips a model that already has
an active run, so running it twice does not start a second chain.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from typing import Mapping

from scripts.fleet_labels import GATEWAY_LABEL, RunLabels
from scripts.github_api import API_URL, GitHubClient, GitHubError, WorkflowRun

FLEET_WORKFLOW = "fleet.yml"
GATEWAY_WORKFLOW = "gateway.yml"
LOCAL_TOKEN_VARIABLES = ("WORKFLOW_PAT", "GITHUB_TOKEN", "GH_TOKEN")
_REMOTE = re.compile(r"github\.com[:/]([^/\s]+/[^/\s]+?)(?:\.git)?/?$")


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def local_token(environ: Mapping[str, str]) -> tuple[str, str]:
    for name in LOCAL_TOKEN_VARIABLES:
        if environ.get(name):
            return name, environ[name]
    gh = shutil.which("gh")
    token = _run([gh, "auth", "token"]) if gh else ""
    return ("the GitHub CLI's login", token) if token else ("GH_TOKEN", "")


def local_repository(environ: Mapping[str, str]) -> str:
    if environ.get("GITHUB_REPOSITORY"):
        return environ["GITHUB_REPOSITORY"]
    match = _REMOTE.search(_run(["git", "remote", "get-url", "origin"]))
    if not match:
        raise GitHubError("cannot tell the repository: set GITHUB_REPOSITORY=owner/name "
                          "(no github.com `origin` remote in this checkout)")
    return match.group(1)


def client(environ: Mapping[str, str] = os.environ) -> GitHubClient:
    name, token = local_token(environ)
    if not token:
        raise GitHubError("no GitHub token: set GH_TOKEN (a token allowed to run workflows), or log in with "
                          "`gh auth login`")
    return GitHubClient(local_repository(environ), token, token_name=name,
                        api_url=environ.get("GITHUB_API_URL") or API_URL)


def active_runs(gh: GitHubClient, workflow: str) -> list[WorkflowRun]:
    return [run for run in gh.iter_runs(workflow, max_pages=2) if run.labels is not None and run.active]


def up(gh: GitHubClient, models: list[str], *, gateway: bool, duration: str | None) -> int:
    from shared.catalogue import load_catalogue

    catalogue = load_catalogue()
    keys = models or [key for key, spec in catalogue.models.items() if spec.instances_for("actions") > 0]
    ref = gh.default_branch()
    extra = {"duration_hours": duration} if duration else {}
    if gateway:
        if any(run.labels and run.labels.model == GATEWAY_LABEL for run in active_runs(gh, GATEWAY_WORKFLOW)):
            print("gateway: already running")
        else:
            gh.dispatch_workflow(GATEWAY_WORKFLOW, ref, dict(extra))
            print("gateway: started")
    running = active_runs(gh, FLEET_WORKFLOW)
    for key in keys:
        spec = catalogue.model(key)
        if any(run.labels and run.labels.model == key for run in running):
            print(f"{key}: already running (see `make fleet-status`)")
            continue
        instances = max(1, min(3, spec.instances_for("actions")))
        gh.dispatch_workflow(FLEET_WORKFLOW, ref, {"model": key, "instances": str(instances), **extra})
        print(f"{key}: started {instances} instance(s)")
    return 0


def status(gh: GitHubClient) -> int:
    runs = active_runs(gh, GATEWAY_WORKFLOW) + active_runs(gh, FLEET_WORKFLOW)
    if not runs:
        print("no fleet run is active; start one with `make fleet-up`")
        return 0
    by_model: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        labels: RunLabels = run.labels  # type: ignore[assignment]
        by_model[labels.model].append(
            f"  instance {labels.instance:<3} id {labels.instance_id or '-':<28} {run.status:<12} {run.html_url}")
    for model in sorted(by_model):
        print(model)
        print("\n".join(by_model[model]))
    return 0


def down(gh: GitHubClient, models: list[str], *, gateway: bool) -> int:
    targets = set(models)
    runs = active_runs(gh, FLEET_WORKFLOW) + (active_runs(gh, GATEWAY_WORKFLOW) if gateway else [])
    cancelled = 0
    for run in runs:
        labels: RunLabels = run.labels  # type: ignore[assignment]
        if labels.model == GATEWAY_LABEL and not gateway:
            continue
        if targets and labels.model not in targets and labels.model != GATEWAY_LABEL:
            continue
        gh.cancel_run(run.id)
        print(f"cancelled {run.title} ({run.html_url})")
        cancelled += 1
    if not cancelled:
        print("nothing to cancel")
    return 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
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
        with client(os.environ if environ is None else environ) as gh:
            if args.command == "up":
                return up(gh, args.models, gateway=args.gateway, duration=args.duration_hours)
            if args.command == "status":
                return status(gh)
            # With models named, the gateway stays up unless asked.
            return down(gh, args.models, gateway=args.gateway and not args.models)
    except GitHubError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
