"""Fault drills (`make drills`): a real gateway in front of two instances under load, one of
which fails in a chosen way; one table at the end.

Each drill starts a fresh gateway and two fake instances (`tests.fake_upstream`, instant
answers, 16-event streams 0.05 s apart), runs 8 clients for a few seconds (non-streamed and
streamed requests in turn), injects the fault into instance A after a second, and reports:
what the clients saw, requests lost (non-streamed requests not answered 200, streams that
ended without `[DONE]`), the time until the gateway stopped sending to A, and the gateway's
resident memory before and after. The partition drill puts A in a network namespace of its
own behind a veth pair and takes the link down (skipped, with a message, where `ip netns` is
not permitted). Everything listens on 127.0.0.0/8 or on that namespace's private link.

Run: ``python -m tests.drills`` (or one: ``python -m tests.drills sigkill``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from shared.catalogue import env_key, load_catalogue
from shared.processes import ChildProcess, free_port
from tests.harness import PROJECT_ROOT

MODEL = next(iter(load_catalogue().models))
LOG_DIR = PROJECT_ROOT / "build" / "drills"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
LOAD_SECONDS, FAULT_AT, CLIENTS = 6.0, 1.0, 8
NETNS, VETH_HOST, VETH_NS = "arena-drill", "arena-drill-h", "arena-drill-n"
HOST_IP, NS_IP = "10.231.0.1", "10.231.0.2"


@dataclass
class Outcome:
    name: str
    seen: Counter = field(default_factory=Counter)
    lost: int = 0
    total: int = 0
    route_around: float | None = None
    rss_before: float = 0.0
    rss_after: float = 0.0
    note: str = ""


def control(instance: Any, **changes: Any) -> None:
    httpx.post(instance.url + "/_control", json=changes, timeout=5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class NetnsInstance:
    """A fake instance inside its own network namespace, reached over a veth pair."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://{NS_IP}:{port}"
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        probe = subprocess.run(["ip", "netns", "add", NETNS + "-probe"], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"ip netns is not permitted here ({probe.stderr.strip() or probe.returncode})"
        subprocess.run(["ip", "netns", "del", NETNS + "-probe"], capture_output=True)
        return None

    def start(self) -> "NetnsInstance":
        for cmd in (["ip", "netns", "add", NETNS],
                    ["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS],
                    ["ip", "link", "set", VETH_NS, "netns", NETNS],
                    ["ip", "addr", "add", f"{HOST_IP}/30", "dev", VETH_HOST],
                    ["ip", "link", "set", VETH_HOST, "up"],
                    ["ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{NS_IP}/30", "dev", VETH_NS],
                    ["ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up"],
                    ["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"]):
            subprocess.run(cmd, check=True, capture_output=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / "netns-instance.log", "ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", NETNS, sys.executable, "-m", "tests.fake_upstream", "--host", NS_IP,
                 "--port", str(self.port), "--model", MODEL, "--slots", "16"],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the instance in the namespace did not start")

    def partition(self) -> None:
        subprocess.run(["ip", "link", "set", VETH_HOST, "down"], check=True)

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


class Fleet:
    def __init__(self, tmp: str, *, a_in_netns: bool = False) -> None:
        env = {"ARENA_GATEWAY_DB_PATH": str(Path(tmp) / "gw.sqlite3"), "ARENA_GATEWAY_LOG_FORMAT": "json",
               "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5", "ARENA_GATEWAY_HEALTH_TIMEOUT": "1.0",
               "ARENA_GATEWAY_REQUEST_TIMEOUT": "5", "ARENA_GATEWAY_CONNECT_TIMEOUT": "1.0",
               "ARENA_REGISTRATION_TOKEN": "", "BASE_DOMAIN": ""}
        self.a: Any = NetnsInstance(free_port()) if a_in_netns else self._fake("a", env)
        self.b = self._fake("b", env)
        for key in load_catalogue().models:
            env[f"{env_key(key)}_API_URL"] = ",".join([self.a.url, self.b.url]) if key == MODEL else ""
        port = free_port()
        self.gateway = ChildProcess("drill-gateway", ["gateway", "--host", "127.0.0.1", "--port", str(port)],
                                    port=port, env=env, log_path=LOG_DIR / "gateway.log")

    @staticmethod
    def _fake(name: str, env: dict[str, str]) -> ChildProcess:
        port = free_port()
        return ChildProcess(f"drill-{name}", ["--port", str(port), "--model", MODEL, "--slots", "16"], port=port,
                            env=env, module="tests.fake_upstream", log_path=LOG_DIR / f"instance-{name}.log")

    def start(self) -> "Fleet":
        for proc in (self.a, self.b):
            proc.start() if isinstance(proc, NetnsInstance) else proc.start().wait_ready("/health", timeout=30)
            control(proc, chunk_delay=0.05)
        self.gateway.start().wait_ready("/health/live", timeout=60)
        deadline = time.monotonic() + 30
        while self.state(0) != "ready" or self.state(1) != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError("instances not ready")
            time.sleep(0.1)
        return self

    def state(self, index: int) -> str | None:
        try:
            response = httpx.get(f"{self.gateway.url}/api/instances/{MODEL}-{index}", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json().get("state") if response.status_code == 200 else None

    def stop(self) -> None:
        self.gateway.stop(timeout=10)
        for proc in (self.a, self.b):
            if isinstance(proc, NetnsInstance):
                proc.stop()
            else:
                proc.signal(signal.SIGCONT)
                proc.stop(timeout=5)


async def _load(url: str, outcome: Outcome, fault: Callable[[], None], watch: Callable[[], None]) -> None:
    deadline = time.monotonic() + LOAD_SECONDS
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        async def one(stream: bool) -> None:
            outcome.total += 1
            try:
                if not stream:
                    response = await client.post(url + "/v1/chat/completions", json=BODY)
                    outcome.seen[f"{response.status_code}"] += 1
                    outcome.lost += response.status_code != 200
                    return
                async with client.stream("POST", url + "/v1/chat/completions", json={**BODY, "stream": True}) as r:
                    if r.status_code != 200:
                        outcome.seen[f"stream {r.status_code}"] += 1
                        outcome.lost += 1
                        return
                    text = (await r.aread()).decode(errors="replace")
                done, error = text.rstrip().endswith("data: [DONE]"), '"error"' in text
                outcome.seen["stream ended by an error event" if error else "stream complete" if done
                             else "stream cut without [DONE]"] += 1
                outcome.lost += not done
            except httpx.HTTPError as exc:
                outcome.seen[type(exc).__name__] += 1
                outcome.lost += 1

        async def worker(i: int) -> None:
            n = i
            while time.monotonic() < deadline:
                await one(stream=n % 2 == 1)
                n += 1

        async def inject() -> None:
            await asyncio.sleep(FAULT_AT)
            await asyncio.to_thread(fault)
            await asyncio.to_thread(watch)

        await asyncio.gather(inject(), *(worker(i) for i in range(CLIENTS)))


def _watch_route_around(fleet: Fleet, outcome: Outcome, started: float) -> None:
    """Until the gateway takes A out of rotation (or the load ends)."""
    while time.monotonic() - started < LOAD_SECONDS:
        if fleet.state(0) != "ready":
            outcome.route_around = time.monotonic() - started
            return
        time.sleep(0.05)


def run_drill(name: str, tmp: str) -> Outcome:
    outcome = Outcome(name)
    fleet = Fleet(tmp, a_in_netns=name == "partition").start()
    try:
        pid = fleet.gateway.process.pid
        httpx.post(fleet.gateway.url + "/v1/chat/completions", json=BODY, timeout=10)
        outcome.rss_before = rss_mb(pid)
        fault_started = 0.0

        def fault() -> None:
            nonlocal fault_started
            fault_started = time.monotonic()
            a = fleet.a
            if name == "sigkill":
                a.signal(signal.SIGKILL)
            elif name == "sigstop":
                a.signal(signal.SIGSTOP)
            elif name == "http500":
                control(a, reject={"status": 500, "error": {"message": "boom", "type": "server_error"}})
            elif name == "half-sse":
                control(a, break_after=3)
            elif name == "trickle":
                control(a, trickle=True)
            elif name == "partition":
                a.partition()

        if name == "never-reads":
            outcome.note = _never_reads(fleet, outcome)
        else:
            asyncio.run(_load(fleet.gateway.url, outcome, fault,
                              lambda: _watch_route_around(fleet, outcome, fault_started)))
        outcome.rss_after = rss_mb(pid)
    finally:
        fleet.stop()
    return outcome


def _never_reads(fleet: Fleet, outcome: Outcome) -> str:
    """Clients that open long streams and never read them, then leave."""
    control(fleet.a, chunks=20000, chunk_delay=0.0)
    control(fleet.b, chunks=20000, chunk_delay=0.0)
    body = json.dumps({**BODY, "stream": True})
    request = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: {n}\r\n\r\n{body}")
    sockets = []
    for _ in range(16):
        sock = socket.create_connection(("127.0.0.1", fleet.gateway.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request.format(n=len(body), body=body).encode())
        sockets.append(sock)
        outcome.total += 1
    peak = rss_mb(fleet.gateway.process.pid)
    for _ in range(30):  # let the gateway fill what it can for three seconds
        time.sleep(0.1)
        peak = max(peak, rss_mb(fleet.gateway.process.pid))
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 10
    outstanding = None
    while time.monotonic() < deadline:
        instances = httpx.get(fleet.gateway.url + "/api/instances", timeout=5).json()
        rows = instances["data"] if isinstance(instances, dict) else instances
        outstanding = sum(row["outstanding"] for row in rows)
        if outstanding == 0:
            break
        time.sleep(0.1)
    outcome.seen["16 streams never read, then closed"] += 1
    return f"peak {peak:.0f} MB while held; outstanding after close: {outstanding}"


DRILLS = ["sigkill", "sigstop", "http500", "half-sse", "trickle", "never-reads", "partition"]


def main(argv: list[str]) -> int:
    chosen = argv or DRILLS
    outcomes: list[Outcome] = []
    for name in chosen:
        if name == "partition" and (reason := NetnsInstance.available()):
            outcomes.append(Outcome(name, note=f"skipped: {reason}"))
            continue
        with tempfile.TemporaryDirectory(prefix="arena-drill-") as tmp:
            print(f"drill {name} ...", flush=True)
            outcomes.append(run_drill(name, tmp))
    print()
    print(f"{'drill':<12} {'requests':>8} {'lost':>5} {'route-around':>12} {'gateway RSS MB':>16}  what the clients saw")
    for o in outcomes:
        route = "-" if o.route_around is None else f"{o.route_around:.2f} s"
        rss = f"{o.rss_before:.0f} -> {o.rss_after:.0f}" if o.rss_before else "-"
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(o.seen.items()))
        print(f"{o.name:<12} {o.total:>8} {o.lost:>5} {route:>12} {rss:>16}  {seen}{'; ' + o.note if o.note else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
