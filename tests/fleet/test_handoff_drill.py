"""The handoff drill: a real gateway, real model services, and the runner agent's own code path.

With a successor: the first runner serves under steady streaming load, launches its successor
through `LocalProcessLauncher` (the same `SuccessorLauncher` interface `GitHubDispatcher`
implements), waits until the gateway reports the successor ready, deregisters itself, drains
and exits. Goal: no failed request and no moment without a ready instance.

Without a successor: the way the original arena restarted: the run ends, the next starts only
then. The same measurements give the downtime that approach accepted.

Figures are printed and written to build/test-logs/handoff-drill-*.json.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.harness import LOG_DIR, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
TOKEN = "drill-registration-token"
RUNNER_ENV = {"ARENA_REGISTRATION_TOKEN": TOKEN}


@dataclass
class Load:
    """Clients that keep streaming chat completions through the gateway."""

    gateway_url: str
    clients: int = 2
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _one(self, http: httpx.Client, n: int) -> None:
        body = {"model": MODEL, "stream": True, "max_tokens": 12,
                "messages": [{"role": "user", "content": f"Count to five, take {n}."}]}
        try:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    self.failed.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    time.sleep(0.25)   # a client retrying at a human pace, not a tight loop
                    return
                done = False
                for line in response.iter_lines():
                    if line.startswith("data: ") and '"error"' in line:
                        self.failed.append(f"error event: {line[:200]}")
                        return
                    if line == "data: [DONE]":
                        done = True
                if not done:
                    self.failed.append("stream ended without [DONE]")
                    return
            self.ok += 1
        except httpx.HTTPError as exc:
            self.failed.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.25)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.gateway_url, timeout=60.0) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                self._one(http, n)

    def start(self) -> "Load":
        for i in range(self.clients):
            thread = threading.Thread(target=self._loop, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


@dataclass
class ReadinessWatch:
    """Samples the gateway's instance list; counts the time no instance of MODEL is ready."""

    gateway_url: str
    interval: float = 0.2
    samples: list[tuple[float, list[str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def ready_ids(self, http: httpx.Client) -> list[str]:
        data = http.get("/api/instances").json()["data"]
        return [i["instance_id"] for i in data if i["model"] == MODEL and i["state"] == "ready"]

    def _loop(self) -> None:
        with httpx.Client(base_url=self.gateway_url, timeout=5.0) as http:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.monotonic(), self.ready_ids(http)))
                except httpx.HTTPError:
                    self.samples.append((time.monotonic(), []))
                time.sleep(self.interval)

    def start(self) -> "ReadinessWatch":
        self._thread = threading.Thread(target=self._loop, name="readiness", daemon=True)
        self._thread.start()
        return self

    def ready_now(self, exclude: set[str] = frozenset()) -> str | None:
        ready = [i for i in self.samples[-1][1] if i not in exclude] if self.samples else []
        return ready[0] if ready else None

    def wait_ready(self, timeout: float, exclude: set[str] = frozenset()) -> str:
        return wait_until(lambda: self.ready_now(exclude), timeout, interval=0.1,
                          what=f"a ready {MODEL} instance")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def seconds_without_ready(self, since: float) -> float:
        gap = 0.0
        points = [s for s in self.samples if s[0] >= since]
        for (t0, ids), (t1, _) in zip(points, points[1:]):
            if not ids:
                gap += t1 - t0
        return gap


def runner(name: str, *extra: str) -> ManagedProcess:
    port = free_port()
    return ManagedProcess(name, ["runner", MODEL, "--tunnel", "none", "--parallel", "2", "--port", str(port),
                                 "--heartbeat-seconds", "2", *extra], port, dict(RUNNER_ENV))


def report(name: str, figures: dict) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / f"handoff-drill-{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"\nhandoff drill ({name}): {json.dumps(figures)}")


@pytest.fixture
def gateway(tmp_path, gateways):
    return gateways({"ARENA_REGISTRATION_TOKEN": TOKEN, "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                     "ARENA_GATEWAY_DB_PATH": str(tmp_path / "gateway.sqlite3"),
                     "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5"})


def test_handoff_to_a_successor_loses_no_request_and_no_second(gateway):
    first = runner("runner-first", "--duration-hours", "0.012", "--margin-minutes", "0.35", "--successor", "local",
                   "--gateway-url", gateway.url)
    watch = ReadinessWatch(gateway.url).start()
    load = Load(gateway.url)
    try:
        first.start()
        first_id = watch.wait_ready(timeout=120)
        load_started = time.monotonic()
        load.start()
        code = first.wait_exit(timeout=150)
        # The successor alone, under the same load, for a few more answers.
        answered = load.ok
        wait_until(lambda: load.ok >= answered + 2 or load.failed, timeout=60, what="answers from the successor")
        load.stop()
        watch.stop()
        log = first.log_tail(200)
        assert code == 0, log
        assert "launched: local process" in log and "is ready; handing off" in log, log
        final = watch.samples[-1][1]
        assert final and first_id not in final, (final, log)
        successor_id = final[0]
        with httpx.Client(base_url=gateway.url) as http:
            assert http.get(f"/api/instances/{first_id}").json()["state"] != "ready"
            assert http.get(f"/api/instances/{successor_id}").json()["state"] == "ready"
        figures = {"requests_ok": load.ok, "requests_failed": len(load.failed),
                   "seconds_without_ready_instance": round(watch.seconds_without_ready(load_started), 2),
                   "load_seconds": round(time.monotonic() - load_started, 1), "failures": load.failed[:5]}
        report("with-successor", figures)
        assert load.ok > 0
        assert load.failed == [], figures
        assert figures["seconds_without_ready_instance"] == 0, figures
    finally:
        load.stop()
        watch.stop()
        first.stop()      # its process group holds the successor and both services


def test_without_a_successor_the_restart_leaves_a_gap(gateway):
    """Baseline: the first run ends at its hard limit and only then does the next one start."""
    first = runner("runner-alone", "--duration-hours", "0.006", "--no-auto-restart", "--gateway-url", gateway.url)
    watch = ReadinessWatch(gateway.url).start()
    load = Load(gateway.url)
    second = None
    try:
        first.start()
        first_id = watch.wait_ready(timeout=120)
        load_started = time.monotonic()
        load.start()
        assert first.wait_exit(timeout=120) == 0, first.log_tail()
        second = runner("runner-restarted", "--duration-hours", "1", "--no-auto-restart",
                        "--gateway-url", gateway.url).start()
        watch.wait_ready(timeout=120, exclude={first_id})
        answered = load.ok
        wait_until(lambda: load.ok > answered, timeout=60, what="an answer from the restarted instance")
        load.stop()
        watch.stop()
        figures = {"requests_ok": load.ok, "requests_failed": len(load.failed),
                   "seconds_without_ready_instance": round(watch.seconds_without_ready(load_started), 2),
                   "failures": load.failed[:3]}
        report("without-successor", figures)
        assert figures["seconds_without_ready_instance"] > 1.0, figures
    finally:
        load.stop()
        watch.stop()
        first.stop()
        if second:
            second.stop()
