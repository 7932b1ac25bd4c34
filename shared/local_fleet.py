"""`arena up`: the local fleet, the gateway plus instances of the catalogue's models, as local
processes supervised together: started together, restarted if one crashes, stopped together
(models drain first) on Ctrl-C or SIGTERM. No process outlives the supervisor.

While it runs, the gateway may start more model processes or drain some through the supervisor's
control channel (`shared.fleet_control`): `start_instance`, `drain_instance`, `list_instances`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import ValidationError

from shared import paths
from shared.catalogue import Catalogue, ModelSpec, env_key
from shared.core_board import BOARD_SLOTS, BoardDirectory
from shared.core_share import CoreShare, available_cpus, pin, share_cores
from shared.fleet_control import ControlRefused, ControlServer
from shared.processes import ChildProcess, free_port

LOG_DIR = paths.log_dir("fleet")
MAX_RESTARTS = 5
MAX_INSTANCES_PER_MODEL = 8     # the catalogue's own bound on `instances`
DRAIN_TIMEOUT = 120.0           # seconds a draining model process may take before it is killed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", metavar="KEY[=N]",
                        help="serve only this model, N instances (repeatable; default: the catalogue's models "
                             "with their `instances` count)")
    parser.add_argument("--host", help="gateway address (default: catalogue fleet.gateway_host)")
    parser.add_argument("--port", type=int, help="gateway port (default: catalogue fleet.gateway_port)")
    parser.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"process logs (default: {LOG_DIR})")


@dataclass
class Member:
    process: ChildProcess
    ready_path: str
    share: CoreShare | None = None
    restarts: int = 0
    slot: int = 0                   # its cell on the core board (when its share is shared)
    model: str | None = None        # None: the gateway
    stopping: bool = False          # asked to drain: not restarted, removed once it exits

    def public(self) -> dict[str, Any]:
        state = "stopping" if self.stopping else "running" if self.process.running else "exited"
        return {"instance_id": self.process.name, "model": self.model, "url": self.process.url, "state": state,
                "pid": self.process.process.pid if self.process.process else None,
                "threads": self.share.threads if self.share else None,
                "cpus": list(self.share.cpus) if self.share and self.share.cpus else None}

    def start(self) -> None:
        self.process.start()
        if self.share is not None:
            # Right after exec the child is still single-threaded: every thread it starts later
            # (llama.cpp's included) inherits this mask.
            pin(self.process.process.pid, self.share.cpus)


def plan_instances(catalogue: Catalogue, selections: list[str] | None) -> dict[str, int]:
    """How many instances of each model: the catalogue's counts, or KEY[=N] selections."""
    if not selections:
        return {key: spec.instances for key, spec in catalogue.models.items() if spec.instances > 0}
    plan: dict[str, int] = {}
    for item in selections:
        key, _, count = item.partition("=")
        catalogue.model(key)  # unknown keys fail here, clearly
        plan[key] = int(count) if count else max(catalogue.models[key].instances, 1)
    return plan


class LocalFleet:
    def __init__(self, catalogue: Catalogue, plan: dict[str, int], *, host: str, port: int, log_dir: Path,
                 shares: list[CoreShare] | None = None, env: dict[str, str] | None = None,
                 control: bool = True, port_picker: Callable[[str], int] = free_port) -> None:
        """`shares`: each model process's cores, in plan order (default: `share_cores`);
        `env`: more environment for every process (the benchmarks switch features with it);
        `control`: serve the control channel, so the gateway can start and drain instances;
        `port_picker`: a free port of a host (the OS's answer, `free_port`)."""
        self.catalogue = catalogue
        self.log_dir = log_dir
        self.env = env or {}
        self.port_picker = port_picker
        self.instances: list[Member] = []
        self._lock = threading.RLock()
        # Processes asked for through the control channel are started from this one long-lived
        # thread: a child's parent-death signal (PR_SET_PDEATHSIG) fires when the *thread* that
        # forked it ends, and each control request runs in a thread of its own.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="fleet-spawn")
        urls: dict[str, list[str]] = {}
        instances = [(key, i) for key, count in plan.items() for i in range(count)]
        if shares is None:
            dynamic = catalogue.fleet.shared_threads
            cpus = available_cpus()
            fixed = max(1, len(cpus) // max(1, len(instances)))
            shares = share_cores([_threads_to_share(catalogue.model(key), fixed if dynamic else None)
                                  for key, _ in instances], cpus, dynamic=dynamic)
        # The board the instances sharing a pool of cores announce their work on (in RAM where
        # the platform has a tmpfs for it); removed with the fleet.
        self._board_dir: BoardDirectory | None = None
        self.board_path: Path | None = None
        if any(share.shared for share in shares):
            self._board_dir = BoardDirectory()
            self.board_path = self._board_dir.board
        for slot, ((key, i), share) in enumerate(zip(instances, shares)):
            member = self._model_member(key, f"{key}-{i}", catalogue.model(key).port + i, share, catalogue.path,
                                        slot)
            self.instances.append(member)
            urls.setdefault(key, []).append(member.process.url)
        self._next_index = {key: count for key, count in plan.items()}
        self._control_wanted = control
        self.control: ControlServer | None = None
        # The gateway is told exactly which instances exist; models left out get none.
        gateway_env = {**self.env,
                       **{f"{env_key(key)}_API_URL": ",".join(urls.get(key, [])) for key in catalogue.models}}
        self.gateway = ChildProcess("gateway", ["gateway", "--host", host, "--port", str(port)], port=port,
                                    host=host, env=gateway_env, log_path=log_dir / "gateway.log",
                                    catalogue=catalogue.path)
        self.gateway_member = Member(self.gateway, "/health/live")
        self._stopping = threading.Event()

    @property
    def members(self) -> list[Member]:
        with self._lock:
            return [*self.instances, self.gateway_member]

    def _model_member(self, key: str, name: str, port: int, share: CoreShare, catalogue_path: Path | None,
                      slot: int = 0) -> Member:
        host = self.catalogue.fleet.service_host
        proc = ChildProcess(name, ["serve", key, "--host", host, "--port", str(port), "--instance-id",
                                   f"local-{name}", "--threads", str(share.threads)],
                            port=port, host=host, env={**self.env, **share.child_env(self.board_path, slot)},
                            log_path=self.log_dir / f"{name}.log", catalogue=catalogue_path)
        return Member(proc, "/health", share, model=key, slot=slot)

    # -- the control channel's operations ---------------------------------------------------

    def list_instances(self) -> list[dict[str, Any]]:
        with self._lock:
            return [member.public() for member in self.instances]

    def start_instance(self, model: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start one more process of `model` on a free port, with a share of the cores; `spec`
        (a catalogue entry) replaces the file's entry for this process. Returns at once: the
        gateway's probes see it go from loading to ready."""
        with self._lock:
            if self._stopping.is_set():
                raise ControlRefused(503, "fleet_stopping", "the fleet is stopping")
            model_spec = self._spec(model, spec)
            live = [m for m in self.instances if m.model == model and not m.stopping]
            if len(live) >= MAX_INSTANCES_PER_MODEL:
                raise ControlRefused(409, "too_many_instances",
                                     f"{model} has {len(live)} instances, the most one model may have here")
            index = self._next_index.get(model, 0)
            self._next_index[model] = index + 1
            name = f"{model}-{index}"
            path = self._catalogue_with(name, model_spec) if spec is not None else self.catalogue.path
            share, slot = self._share_for(model_spec)
            member = self._model_member(model, name, self._free_port(), share, path, slot)
            self._spawner.submit(member.start).result()
            self.instances.append(member)
        print(f"  start  {name:<16} {member.process.url}{_describe(member.share)} (asked by the gateway)", flush=True)
        return member.public()

    def _free_port(self) -> int:
        """A free port no process of this fleet was given (under `_lock`): the OS may hand out
        again a port that an instance started a moment ago has not bound yet (its process is
        still importing), so two starts in a row could otherwise get the same port."""
        taken = {m.process.port for m in self.instances} | {self.gateway.port}
        for _ in range(100):
            port = self.port_picker(self.catalogue.fleet.service_host)
            if port not in taken:
                return port
        raise ControlRefused(503, "no_free_port", "no free port found for a new instance")

    def drain_instance(self, instance_id: str) -> dict[str, Any]:
        """SIGTERM one model process (it finishes in-flight work), then forget it once it exits."""
        with self._lock:
            member = next((m for m in self.instances if m.process.name == instance_id), None)
            if member is None:
                raise ControlRefused(404, "instance_not_found", f"no model process {instance_id!r} in this fleet")
            if not member.stopping:
                member.stopping = True
                threading.Thread(target=self._drain, args=(member,), name=f"drain-{instance_id}", daemon=True).start()
            return member.public()

    def _drain(self, member: Member) -> None:
        print(f"  drain  {member.process.name:<16} (asked by the gateway)", flush=True)
        member.process.stop(timeout=DRAIN_TIMEOUT)
        with self._lock:
            if member in self.instances:
                self.instances.remove(member)
        print(f"  gone   {member.process.name}", flush=True)

    def _spec(self, model: str, spec: dict[str, Any] | None) -> ModelSpec:
        if spec is None:
            if model not in self.catalogue.models:
                raise ControlRefused(404, "model_not_found", f"{model!r} is not in this fleet's catalogue; send its spec")
            return self.catalogue.models[model]
        try:
            return ModelSpec.model_validate({**spec, "key": model})
        except ValidationError as exc:
            raise ControlRefused(400, "invalid_spec", f"invalid spec for {model}: {exc}"[:2000]) from None

    def _catalogue_with(self, name: str, spec: ModelSpec) -> Path:
        """A catalogue file for one process: the fleet's file with this model's entry replaced."""
        raw: dict[str, Any] = yaml.safe_load(self.catalogue.path.read_text()) if self.catalogue.path else {}
        raw.setdefault("models", {})[spec.key] = {**spec.model_dump(mode="json", exclude={"key"}),
                                                  "source": str(spec.source)}
        path = self.log_dir / "specs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def _share_for(self, spec: ModelSpec) -> tuple[CoreShare, int]:
        """The pool of the instances sharing the cores, with a free cell on their board, when the
        fleet has one and the model's threads are automatic; else cores of its own when some are
        free of every pinned process (and none roams), else an unpinned share that waits
        passively, like every instance of an oversubscribed fleet.

        A draining instance still runs until it exits: its cell and cores stay taken until then
        (it is forgotten only once it is gone)."""
        running = [m for m in self.instances if m.share is not None]
        sharing = [m for m in running if m.share.shared]
        slots = sorted(set(range(BOARD_SLOTS)) - {m.slot for m in sharing})
        if self.board_path is not None and _follows_board(spec) and sharing and slots:
            return sharing[0].share, slots[0]
        return self._fixed_share_for(spec, running), 0

    def _fixed_share_for(self, spec: ModelSpec, live: list[Member]) -> CoreShare:
        cpus = available_cpus()
        taken = {cpu for m in live for cpu in (m.share.cpus or ())}
        free = [cpu for cpu in cpus if cpu not in taken]
        roaming = any(m.share.cpus is None for m in live)
        if free and not roaming and (spec.threads or 1) <= len(free):
            return share_cores([spec.threads], free)[0]
        threads = spec.threads or max(1, len(cpus) // (len(live) + 1))
        return CoreShare(threads, None, passive_wait=True)

    def start(self) -> None:
        if self._control_wanted:
            # Only the gateway gets the control channel's address and token.
            self.control = ControlServer(self).start()
            self.gateway.env.update(self.control.child_env())
        for member in self.members:
            member.start()
        for member in self.members:
            member.process.wait_ready(member.ready_path, timeout=300)
            print(f"  ready  {member.process.name:<16} {member.process.url}{_describe(member.share)}", flush=True)

    def supervise(self) -> None:
        """Restart a crashed process (a few times, with back-off) until asked to stop."""
        while not self._stopping.wait(1.0):
            for member in self.members:
                proc = member.process
                if proc.running or member.stopping or self._stopping.is_set():
                    continue
                if member.restarts >= MAX_RESTARTS:
                    print(f"  {proc.name} keeps crashing; giving up on it (log: {proc.log_path})", flush=True)
                    continue
                member.restarts += 1
                print(f"  {proc.name} exited ({proc.process.returncode}); restart {member.restarts}"
                      f"/{MAX_RESTARTS} (log: {proc.log_path})", flush=True)
                time.sleep(min(2 ** member.restarts, 30))
                member.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.control is not None:
            self.control.stop()
        self._spawner.shutdown(wait=True)
        # Models first (they drain in-flight work), then the gateway that was relaying it.
        with self._lock:
            services = [m.process for m in self.instances]
        threads = [threading.Thread(target=p.stop, kwargs={"timeout": 60}) for p in services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.gateway.stop(timeout=10)
        if self._board_dir is not None:
            self._board_dir.remove()


def _follows_board(spec: ModelSpec) -> bool:
    """Whether a model's instances can share cores by the core board: automatic threads on the
    in-process engine, which sets its threads at every step (llama-server, a child whose thread
    count is fixed at start, cannot)."""
    return spec.threads is None and spec.engine != "llama-server"


def _threads_to_share(spec: ModelSpec, fixed: int | None) -> int | None:
    """What `share_cores` is given for a model: the catalogue's threads, None for automatic, or
    for automatic threads that cannot follow the board, `fixed` cores of its own."""
    if spec.threads is not None or _follows_board(spec):
        return spec.threads
    return fixed


def _describe(share: CoreShare | None) -> str:
    if share is None:
        return ""
    cores = f"cores {','.join(map(str, share.cpus))}" if share.cpus else "cores shared"
    threads = f"{share.threads} threads while the others are idle, a share while they work" if share.shared \
        else f"{share.threads} thread{'s' if share.threads > 1 else ''}"
    return f"  ({threads}, {cores})"


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    plan = plan_instances(catalogue, args.model)
    host = args.host or catalogue.fleet.gateway_host
    port = args.port or catalogue.fleet.gateway_port
    fleet = LocalFleet(catalogue, plan, host=host, port=port, log_dir=args.log_dir)
    print(f"Starting the local fleet: {', '.join(f'{k} x{n}' for k, n in plan.items())} (logs: {args.log_dir})",
          flush=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        fleet.start()
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        print(f"\nServerless LLM Arena is up:\n"
              f"  arena UI     http://{shown}:{port}/\n"
              f"  OpenAI API   http://{shown}:{port}/v1  (models: {', '.join(plan)})\n"
              f"  status       http://{shown}:{port}/status\n"
              f"Press Ctrl-C to stop every process.", flush=True)
        fleet.supervise()
    except KeyboardInterrupt:
        print("\nStopping the fleet (models finish what they are doing)...", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"The fleet could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fleet.stop()
    print("Stopped.", flush=True)
    return 0
