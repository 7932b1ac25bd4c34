"""`arena up`: the local fleet, the gateway plus instances of the catalogue's models, as local
processes supervised together: started together, restarted if one crashes, stopped together
(models drain first) on Ctrl-C or SIGTERM. No process outlives the supervisor."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared import paths
from shared.catalogue import Catalogue, env_key
from shared.core_board import CoreBoard
from shared.core_share import CoreShare, available_cpus, pin, share_cores
from shared.processes import ChildProcess

LOG_DIR = paths.log_dir("fleet")
MAX_RESTARTS = 5


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
                 shares: list[CoreShare] | None = None, env: dict[str, str] | None = None) -> None:
        """`shares`: each model process's cores, in plan order (default: `share_cores`);
        `env`: more environment for every process (the benchmarks switch features with it)."""
        self.catalogue = catalogue
        self.members: list[Member] = []
        service_host = catalogue.fleet.service_host
        urls: dict[str, list[str]] = {}
        instances = [(key, i) for key, count in plan.items() for i in range(count)]
        if shares is None:
            shares = share_cores([catalogue.model(key).threads for key, _ in instances], available_cpus(),
                                 dynamic=catalogue.fleet.shared_threads)
        # The board the instances sharing a pool of cores announce their work on (in RAM where
        # the platform has a tmpfs for it); removed with the fleet.
        self._board_dir = None
        board_path = None
        if any(share.shared for share in shares):
            self._board_dir = Path(tempfile.mkdtemp(prefix="arena-cores-", dir=_tmpfs()))
            board_path = self._board_dir / "board"
            CoreBoard(board_path, create=True).close()
        for slot, ((key, i), share) in enumerate(zip(instances, shares)):
            spec = catalogue.model(key)
            service_port = spec.port + i
            name = f"{key}-{i}"
            proc = ChildProcess(name, ["serve", key, "--host", service_host, "--port", str(service_port),
                                       "--instance-id", f"local-{name}", "--threads", str(share.threads)],
                                port=service_port, host=service_host,
                                env={**(env or {}), **share.child_env(board_path, slot)},
                                log_path=log_dir / f"{name}.log", catalogue=catalogue.path)
            self.members.append(Member(proc, "/health", share))
            urls.setdefault(key, []).append(proc.url)
        # The gateway is told exactly which instances exist; models left out get none.
        gateway_env = {**(env or {}),
                       **{f"{env_key(key)}_API_URL": ",".join(urls.get(key, [])) for key in catalogue.models}}
        self.gateway = ChildProcess("gateway", ["gateway", "--host", host, "--port", str(port)], port=port,
                                    host=host, env=gateway_env, log_path=log_dir / "gateway.log",
                                    catalogue=catalogue.path)
        self.members.append(Member(self.gateway, "/health/live"))
        self._stopping = threading.Event()

    def start(self) -> None:
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
                if proc.running or self._stopping.is_set():
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
        # Models first (they drain in-flight work), then the gateway that was relaying it.
        services = [m.process for m in self.members if m.process is not self.gateway]
        threads = [threading.Thread(target=p.stop, kwargs={"timeout": 60}) for p in services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.gateway.stop(timeout=10)
        if self._board_dir is not None:
            shutil.rmtree(self._board_dir, ignore_errors=True)


def _tmpfs() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


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
