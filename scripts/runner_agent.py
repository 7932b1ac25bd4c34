"""`arena runner MODEL`: one model instance on a CI runner, handing off to its successor.

Life of one link of the chain:

1. fetch the model file (cache first: a restored actions/cache means no download);
2. start `arena serve` on the model's port and wait until `/health` says ok;
3. open the tunnel (named when `TUNNELS_JSON` has this model's token, quick otherwise);
4. register the public URL with the gateway under this run's own instance id; heartbeat;
5. at `duration - margin`, launch the successor with an instance id chosen here;
6. once the gateway reports that id ready: deregister this id (no new requests), let the
   service drain (in-flight streams finish), stop the tunnel, exit 0;
7. if the successor never becomes ready, keep serving until `duration` (the hard limit), then
   drain and exit 3 with an error annotation saying so.

If the service dies, the successor is launched at once (when auto-restart is on) and the agent
deregisters and exits 1. SIGTERM or SIGINT drains the same way as a handoff (a cancelled
Actions run allows about 10 s for that: see the README), and so does a heartbeat answered with
``"drain": true`` (the instance was stopped alone from the admin side, e.g. one job of a
fleet-up run whose other jobs serve on): no successor, exit 0.

The serving loop never waits on GitHub: launching the successor and checking on its run happen
on a worker thread, at most once a `launcher.poll_seconds` (GitHub's hourly budget is shared by
every job of the repository). Whether the successor is ready is asked of the gateway.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from scripts.actions_log import JobLog
from scripts.child_env import service_env
from scripts.fleet_labels import new_instance_id
from scripts.github_api import GitHubAuthError, GitHubClient, GitHubRateLimited, token_from_environment
from scripts.gateway_client import GatewayRegistrationClient, GatewayUnavailable, RegistrationError
from scripts.successor import (GitHubDispatcher, LaunchedSuccessor, LocalProcessLauncher,
                               SuccessorLauncher, SuccessorRequest)
from scripts.tunnel import MAX_GRACE_SECONDS, Tunnel, TunnelError, choose_tunnel
from shared.catalogue import Catalogue
from shared.processes import ChildProcess, free_port

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_SUCCESSOR = 3
DEFAULT_WORKFLOW = "fleet.yml"


@dataclass(frozen=True)
class Timeline:
    """When to launch the successor and when the runner's time is up (epoch seconds)."""

    started_at: float
    duration_hours: float
    margin_minutes: float

    @property
    def hard_limit(self) -> float:
        return self.started_at + self.duration_hours * 3600

    @property
    def handoff_at(self) -> float:
        return max(self.started_at, self.hard_limit - self.margin_minutes * 60)


def service_process(model: str, host: str, port: int, parallel: int | None, instance_id: str,
                    environ: Mapping[str, str] | None = None, catalogue: Catalogue | None = None) -> ChildProcess:
    """`arena serve MODEL` as a child whose output goes to the job log, seeing only the
    variables a model service needs (never WORKFLOW_PAT, TUNNELS_JSON or the registration token)."""
    args = ["serve", model, "--host", host, "--port", str(port), "--instance-id", instance_id]
    if parallel:
        args += ["--parallel", str(parallel)]
    return ChildProcess(f"{model} service", args, port=port, host=host, log_path=None,
                        env=service_env(os.environ if environ is None else environ), inherit_env=False,
                        catalogue=catalogue.path if catalogue else None)


def require_instance_secret(environ: Mapping[str, str], public: bool) -> None:
    """A service behind a public URL answers only the gateway: without a secret it would answer
    anyone who finds the URL, so a runner refuses to start."""
    if public and not environ.get("ARENA_INSTANCE_SECRET"):
        raise RuntimeError("ARENA_INSTANCE_SECRET is not set: a model service on a public URL would answer "
                           "anyone. Set the repository secret ARENA_INSTANCE_SECRET (the gateway needs the same).")


class RunnerAgent:
    def __init__(self, *, model: str, instance: str, instance_id: str, predecessor_id: str,
                 timeline: Timeline, auto_restart: bool, service: ChildProcess, tunnel: Tunnel,
                 gateway: GatewayRegistrationClient, launcher: SuccessorLauncher | None, log: JobLog,
                 heartbeat_seconds: float = 10.0, ready_timeout: float = 600.0,
                 tunnel_timeout: float = 60.0, drain_timeout: float = 300.0,
                 tick_seconds: float = 0.5, max_launches: int = 3, ready_check_seconds: float = 1.0) -> None:
        self.model = model
        self.instance = instance
        self.instance_id = instance_id
        self.predecessor_id = predecessor_id
        self.timeline = timeline
        self.auto_restart = auto_restart
        self.service = service
        self.tunnel = tunnel
        self.gateway = gateway
        self.launcher = launcher
        self.log = log
        self.heartbeat_seconds = heartbeat_seconds
        self.ready_timeout = ready_timeout
        self.tunnel_timeout = tunnel_timeout
        self.drain_timeout = drain_timeout
        self.tick_seconds = tick_seconds
        self.max_launches = max_launches
        self.stop_requested: str | None = None
        self.public_url = ""
        self.successor: LaunchedSuccessor | None = None
        self.successor_id = ""
        self.launches = 0
        self.next_launch_at = 0.0
        self.ready_check_seconds = ready_check_seconds
        self._registered = False
        # At most one job at a time talks to the launcher's backend (GitHub), off the serving
        # loop; a daemon thread, so a request GitHub never answers cannot hold the exit.
        self._pending: threading.Thread | None = None

    def _in_background(self, job: Callable[[], None]) -> None:
        self._pending = threading.Thread(target=job, name="successor", daemon=True)
        self._pending.start()

    def _background_busy(self) -> bool:
        return self._pending is not None and self._pending.is_alive()

    # -- steps -------------------------------------------------------------------------------

    def request_stop(self, signum: int, _frame: object = None) -> None:
        self.stop_requested = f"received {signal.Signals(signum).name}"

    def _register(self) -> None:
        answer = self.gateway.register(model=self.model, url=self.public_url, instance_id=self.instance_id,
                                       ttl_seconds=max(3, round(self.heartbeat_seconds * 3)))
        self._registered = True
        self.log.info(f"registered {self.instance_id} at {self.public_url} with the gateway"
                      f" (expires {answer.get('expires_at', '?')})")

    def _heartbeat(self) -> None:
        try:
            answer = self.gateway.heartbeat_answer(self.instance_id)
            if answer is None:
                self.log.warning(f"the gateway forgot {self.instance_id}; registering again")
                self._register()
            elif answer.get("drain") is True and not self.stop_requested:
                # Stopped alone (its run may serve other instances): drain and end, no successor.
                self.stop_requested = "the gateway asked this instance to drain"
        except (GatewayUnavailable, RegistrationError) as exc:
            self.log.warning(f"heartbeat failed: {exc}")

    def _launch_successor(self) -> None:
        if self.launcher is None:
            self.log.warning("auto-restart is on but there is no successor launcher")
            self.launches = self.max_launches
            return
        self.launches += 1
        self.successor_id = new_instance_id(self.model, self.instance)
        request = SuccessorRequest(model=self.model, instance=self.instance, instance_id=self.successor_id,
                                   predecessor_id=self.instance_id,
                                   duration_hours=self.timeline.duration_hours, auto_restart=self.auto_restart)
        try:
            launched = self.launcher.launch(request)
        except GitHubRateLimited as exc:
            # Not the successor's fault: try again once GitHub allows it, without using an attempt.
            self.launches -= 1
            self.next_launch_at = time.time() + (exc.retry_after or 60.0)
            self.log.warning(f"GitHub rate limit; the successor is dispatched in {exc.retry_after or 60:.0f}s: {exc}")
            return
        except GitHubAuthError as exc:
            # A bad token stays bad: say so once, and keep serving until the hard limit.
            self.successor = None
            self.launches = self.max_launches
            self.log.error(f"could not launch the successor: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - any other launch failure is logged and retried
            self.successor = None
            remaining = max(0.0, self.timeline.hard_limit - time.time())
            self.next_launch_at = time.time() + min(30.0, remaining / 4)
            self.log.error(f"could not launch the successor (attempt {self.launches}/{self.max_launches}): {exc}")
            return
        self.successor = launched
        self.log.info(f"successor {self.successor_id} launched: {launched.description}")

    def _check_successor(self) -> None:
        """Ask the launcher whether the successor is known to have failed (a GitHub request)."""
        launched = self.successor
        why = self.launcher.failed(launched) if self.launcher and launched else None
        if why and self.successor is launched:
            self.log.error(f"successor {self.successor_id} failed: {why}")
            self.successor = None

    def _successor_ready(self) -> bool:
        try:
            return self.gateway.is_ready(self.successor_id)
        except (GatewayUnavailable, RegistrationError) as exc:
            self.log.warning(f"cannot ask the gateway about the successor: {exc}")
            return False

    def _drain(self, reason: str) -> int | None:
        self.log.info(f"draining: {reason}")
        if self._registered:
            try:
                removed = self.gateway.deregister(self.instance_id)
                self.log.info(f"deregistered {self.instance_id}" + ("" if removed else " (already gone)"))
            except (GatewayUnavailable, RegistrationError) as exc:
                self.log.warning(f"deregistration of {self.instance_id} failed ({exc}); its TTL will expire")
            self._registered = False
            # A request the balancer picked just before the DELETE may still be on its way.
            time.sleep(min(1.0, self.heartbeat_seconds))
        if self.tunnel.shared_url:
            # The successor answers at the same URL: this connector takes no new requests from
            # now on, and cloudflared's grace period lets the open streams finish.
            self.tunnel.begin_stop()
        code = self.service.stop(self.drain_timeout)
        self.log.info(f"the model service exited with {code}")
        self.tunnel.stop()
        return code

    # -- the whole life ----------------------------------------------------------------------

    def run(self) -> int:
        tl = self.timeline
        self.log.info(f"{self.model} instance {self.instance} id {self.instance_id}"
                      + (f", successor of {self.predecessor_id}" if self.predecessor_id else "")
                      + f"; handoff in {tl.handoff_at - time.time():.0f}s, hard limit in {tl.hard_limit - time.time():.0f}s")
        try:
            self.service.start()
            self.service.wait_ready("/health", self.ready_timeout, abort=lambda: self.stop_requested)
            self.log.info(f"model service ready at {self.service.url}")
            self.public_url = self.tunnel.start(self.tunnel_timeout)
            self.log.info(f"public URL {self.public_url}")
            self._register()
        except (RuntimeError, TunnelError, RegistrationError, GatewayUnavailable) as exc:
            self.log.error(f"start-up failed: {exc}")
            self._drain("start-up failed")
            return EXIT_FAILED
        return self._serve()

    def _launch_now(self) -> None:
        """The service or the tunnel died: launch the successor at once, waiting for the worker."""
        if self._pending is not None:
            self._pending.join(timeout=60)
        if self._background_busy() or not self.auto_restart:
            return
        if self.successor is None and self.launches < self.max_launches:
            self._launch_successor()

    def _serve(self) -> int:
        tl = self.timeline
        next_heartbeat = time.monotonic() + self.heartbeat_seconds
        next_ready_check = next_failed_check = 0.0
        while True:
            now = time.time()
            if self.stop_requested:
                self._drain(self.stop_requested)
                return EXIT_OK
            if not self.service.running:
                self.log.error(f"the model service died (exit {self.service.process.returncode})")
                self._launch_now()
                self._drain("the model service died")
                return EXIT_FAILED
            if not self.tunnel.alive():
                self.log.error("the tunnel process died")
                self._launch_now()
                self._drain("the tunnel died")
                return EXIT_FAILED
            if time.monotonic() >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = time.monotonic() + self.heartbeat_seconds
            if self.auto_restart and now >= tl.handoff_at:
                # Readiness comes from the gateway, so a slow GitHub never delays the handoff.
                if self.successor is not None and time.monotonic() >= next_ready_check:
                    next_ready_check = time.monotonic() + self.ready_check_seconds
                    if self._successor_ready():
                        self.log.info(f"successor {self.successor_id} is ready; handing off")
                        self._drain("handoff to the successor")
                        return EXIT_OK
                if not self._background_busy():
                    if self.successor is None and self.launches < self.max_launches:
                        if now >= self.next_launch_at:
                            self._in_background(self._launch_successor)
                    elif self.successor is not None and self.launcher \
                            and time.monotonic() >= next_failed_check:
                        next_failed_check = time.monotonic() + self.launcher.poll_seconds
                        self._in_background(self._check_successor)
            if now >= tl.hard_limit:
                if not self.auto_restart:
                    self._drain("the run's time is up (auto-restart is off)")
                    return EXIT_OK
                self.log.error(f"no successor became ready before the hard limit; served until "
                               f"{time.strftime('%H:%M:%S', time.gmtime(tl.hard_limit))} UTC and stop now. "
                               f"Start the fleet again with `make fleet-up`.")
                self._drain("hard limit reached without a ready successor")
                return EXIT_NO_SUCCESSOR
            time.sleep(self.tick_seconds)


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="catalogue key of the model to serve")
    parser.add_argument("--instance", default="1", help="instance label within the model (1-3)")
    parser.add_argument("--instance-id", default="", help="registration id (chosen by the predecessor)")
    parser.add_argument("--predecessor-id", default="", help="instance id of the run this one replaces")
    parser.add_argument("--duration-hours", type=float, default=None,
                        help="life of this runner before the hard limit (fractions allowed)")
    parser.add_argument("--margin-minutes", type=float, default=None,
                        help="launch the successor this long before the hard limit")
    parser.add_argument("--started-at", type=float, default=None,
                        help="epoch seconds the runner job started (default: now)")
    parser.add_argument("--no-auto-restart", dest="auto_restart", action="store_false")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="service port (default: the catalogue's)")
    parser.add_argument("--parallel", type=int, default=None)
    parser.add_argument("--tunnel", choices=["auto", "named", "quick", "none"], default="auto",
                        help="auto: the named tunnel in TUNNELS_JSON (quick only with --allow-quick-tunnel)")
    parser.add_argument("--allow-quick-tunnel", action="store_true",
                        help="testing only: quick tunnels do not carry streamed (SSE) answers")
    parser.add_argument("--public-url", default=None,
                        help="with --tunnel none: the URL the gateway reaches the service at "
                             "(default: $ARENA_RUNNER_PUBLIC_URL, else the local address)")
    parser.add_argument("--cloudflared", default=None, help="cloudflared binary (default: pycloudflared's)")
    parser.add_argument("--successor", choices=["github", "local", "none"], default=None,
                        help="how to launch the successor (default: github on Actions, else local)")
    parser.add_argument("--workflow", default=DEFAULT_WORKFLOW, help="workflow file dispatched for the successor")
    parser.add_argument("--ref", default=None, help="git ref for the successor (default: this run's)")
    parser.add_argument("--gateway-url", default=None, help="default: $ARENA_GATEWAY_URL")
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="how long the model service may take to finish its requests")
    parser.add_argument("--tunnel-grace-seconds", type=float, default=MAX_GRACE_SECONDS,
                        help=f"cloudflared's --grace-period (at most {MAX_GRACE_SECONDS:.0f} s, its limit)")
    parser.add_argument("--github-poll-seconds", type=float, default=60.0,
                        help="how often the successor's run is looked at on GitHub (30-60 s spares the budget)")


def build_launcher(kind: str, args: argparse.Namespace, log: JobLog) -> SuccessorLauncher | None:
    if kind == "none":
        return None
    if kind == "local":
        passthrough = ["--tunnel", args.tunnel, "--heartbeat-seconds", f"{args.heartbeat_seconds:g}",
                       "--drain-timeout", f"{args.drain_timeout:g}"]
        if args.margin_minutes is not None:
            passthrough += ["--margin-minutes", f"{args.margin_minutes:g}"]
        if args.parallel:
            passthrough += ["--parallel", str(args.parallel)]
        if args.gateway_url:
            passthrough += ["--gateway-url", args.gateway_url]
        if args.cloudflared:
            passthrough += ["--cloudflared", args.cloudflared]
        if args.allow_quick_tunnel:
            passthrough += ["--allow-quick-tunnel"]
        return LocalProcessLauncher(port_picker=free_port, extra_args=passthrough)
    log.mask(token_from_environment(os.environ)[1])
    client = GitHubClient.from_environment(os.environ)
    ref = args.ref or os.environ.get("GITHUB_REF_NAME") or "main"
    return GitHubDispatcher(client, args.workflow, ref, poll_seconds=args.github_poll_seconds)


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    """`arena runner MODEL`: the agent's own command; the CLI passes the catalogue it loaded."""
    from shared.catalogue import CatalogueError
    from shared.model_files import ModelFileError, resolve_model_file

    log = JobLog(prefix=f"runner {args.model}/{args.instance}")
    for name in ("ARENA_REGISTRATION_TOKEN", "ARENA_INSTANCE_SECRET", "WORKFLOW_PAT", "GITHUB_TOKEN"):
        log.mask(os.environ.get(name))
    on_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    try:
        require_instance_secret(os.environ, public=on_actions or args.tunnel != "none")
        spec = catalogue.model(args.model)
    except (CatalogueError, RuntimeError) as exc:
        log.error(f"cannot start: {exc}")
        return EXIT_FAILED
    fleet = catalogue.fleet
    duration = args.duration_hours if args.duration_hours is not None else fleet.runner_duration_hours
    margin = args.margin_minutes if args.margin_minutes is not None else fleet.runner_handoff_margin_minutes
    timeline = Timeline(args.started_at or time.time(), duration, margin)
    instance_id = args.instance_id or new_instance_id(spec.key, args.instance)

    fetch_started = time.monotonic()
    try:
        model_path = resolve_model_file(spec, fleet.model_cache_path(), progress=False)
    except ModelFileError as exc:
        log.error(f"cannot fetch the model: {exc}")
        return EXIT_FAILED
    log.info(f"model file {model_path} in {time.monotonic() - fetch_started:.1f}s")

    port = args.port or spec.port
    service = service_process(spec.key, args.host, port, args.parallel, instance_id, catalogue=catalogue)
    try:
        tunnel = choose_tunnel(args.tunnel, label=spec.key, hostname=spec.hostname, local_url=service.url,
                               base_domain=fleet.base_domain, job_log=log, cloudflared=args.cloudflared,
                               public_url=args.public_url or os.environ.get("ARENA_RUNNER_PUBLIC_URL"),
                               grace_seconds=args.tunnel_grace_seconds, allow_quick=args.allow_quick_tunnel)
        gateway = GatewayRegistrationClient(args.gateway_url or os.environ.get("ARENA_GATEWAY_URL", ""),
                                            os.environ.get("ARENA_REGISTRATION_TOKEN", ""))
        kind = args.successor or ("github" if on_actions else "local")
        launcher = build_launcher(kind, args, log) if args.auto_restart else None
    except Exception as exc:  # noqa: BLE001 - configuration errors end the run with a clear line
        log.error(f"cannot start: {exc}")
        return EXIT_FAILED

    agent = RunnerAgent(model=spec.key, instance=args.instance, instance_id=instance_id,
                        predecessor_id=args.predecessor_id, timeline=timeline, auto_restart=args.auto_restart,
                        service=service, tunnel=tunnel, gateway=gateway, launcher=launcher, log=log,
                        heartbeat_seconds=args.heartbeat_seconds, ready_timeout=args.ready_timeout,
                        drain_timeout=args.drain_timeout)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    try:
        return agent.run()
    finally:
        gateway.close()
