"""Goodput under overload: 4x the fleet's slots of concurrent clients, with and without the
gateway's overload buffer (`gateway.overload_buffer`).

One fake model instance (`tests.fake_upstream`) with `slots` slots and a queue of `slots`
(503 beyond it, like the model service), each answer taking `delay` seconds, behind a real
gateway process; `4 * slots` clients send requests back to back for `seconds`. Reported per
case: requests completed, p50/p99 latency of the completed ones, and 503s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from shared.catalogue import Catalogue, env_key, load_catalogue
from shared import paths
from shared.processes import ChildProcess, free_port


async def _load(url: str, model: str, clients: int, seconds: float) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.post(url + "/v1/chat/completions", json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                elif response.status_code == 503:
                    await asyncio.sleep(0.05)  # a client backing off a little, as SDKs do

        await asyncio.gather(*(worker() for _ in range(clients)))
    latencies.sort()
    return {"completed": len(latencies), "rejected_503": statuses.get(503, 0),
            "other": sum(n for s, n in statuses.items() if s not in (200, 503)),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1)
            if latencies else None}


def _case(buffer: int, slots: int, delay: float, seconds: float) -> dict[str, Any]:
    catalogue = load_catalogue()
    model = next(iter(catalogue.models))
    upstream_port, gateway_port = free_port(), free_port()
    log_dir = paths.log_dir("bench")
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        env = {"ARENA_GATEWAY_DB_PATH": str(Path(tmp) / "gw.sqlite3"), "ARENA_GATEWAY_LOG_FORMAT": "json",
               "ARENA_GATEWAY_HEALTH_INTERVAL": "0.5", f"ARENA_MODEL_{env_key(model)}__OVERLOAD_BUFFER": str(buffer)}
        upstream = ChildProcess("fake-upstream", ["--port", str(upstream_port), "--model", model,
                                                  "--slots", str(slots)], port=upstream_port, env=env,
                                module="tests.fake_upstream", log_path=log_dir / "overload-upstream.log")
        for key in catalogue.models:
            env[f"{env_key(key)}_API_URL"] = upstream.url if key == model else ""
        gateway = ChildProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(gateway_port)],
                               port=gateway_port, env=env, log_path=log_dir / "overload-gateway.log")
        try:
            upstream.start().wait_ready("/health", timeout=60)
            httpx.post(upstream.url + "/_control", json={"delay": delay, "max_queue": slots}, timeout=5)
            gateway.start().wait_ready("/health/live", timeout=60)
            deadline = time.monotonic() + 30
            while f'"slots_total":{slots}' not in httpx.get(gateway.url + "/api/instances").text.replace(" ", ""):
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway never saw the instance's slots")
                time.sleep(0.1)
            return asyncio.run(_load(gateway.url, model, 4 * slots, seconds))
        finally:
            gateway.stop(timeout=10)
            upstream.stop(timeout=10)


def run_overload_bench(slots: int = 4, delay: float = 0.25, seconds: float = 8.0, buffer: int = 32) -> dict[str, Any]:
    result = {"slots": slots, "clients": 4 * slots, "answer_seconds": delay, "seconds": seconds,
              "without_buffer": _case(0, slots, delay, seconds), "with_buffer": _case(buffer, slots, delay, seconds)}
    print(f"\nOverload: {4 * slots} clients on {slots} slots, answers of {delay} s, {seconds} s per case")
    print(f"{'':15} {'completed':>9} {'p50 ms':>8} {'p99 ms':>8} {'503s':>6} {'other':>6}")
    for name in ("without_buffer", "with_buffer"):
        r = result[name]
        print(f"{name.replace('_', ' '):15} {r['completed']:>9} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} "
              f"{r['rejected_503']:>6} {r['other']:>6}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overload (goodput at 4x the slots, with and without the overload buffer)")
    group.add_argument("--overload-slots", type=int, default=4, help="slots of the fake instance")
    group.add_argument("--overload-delay", type=float, default=0.25, help="seconds each answer takes")
    group.add_argument("--overload-seconds", type=float, default=8.0, help="seconds of load per case")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict[str, Any]:
    """`arena bench --mode overload`."""
    return run_overload_bench(args.overload_slots, args.overload_delay, args.overload_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="goodput at 4x the fleet's slots, with and without the buffer")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=8.0)
    cli = parser.parse_args()
    run_overload_bench(cli.slots, cli.delay, cli.seconds)
