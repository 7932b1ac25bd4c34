"""The gateway's overhead, measured against an instant fake upstream (`tests.fake_upstream`).

Starts the fake upstream (16-chunk streams) and a real gateway process in front of it, on free
ports of 127.0.0.1, then measures the same load directly and through the gateway:

- p50 latency of non-streamed chat completions, one at a time (the gateway's added ms);
- streamed chat completions per second at `concurrency` clients (the share the gateway carries).

Goals: add at most 1 ms at p50, and carry at least 0.9 of the upstream's own streamed rate.
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

from shared import paths, sse
from shared.catalogue import Catalogue, env_key
from shared.processes import ChildProcess, free_port

_BODY = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


def _latencies(url: str, model: str, n: int) -> list[float]:
    body = {**_BODY, "model": model}
    times = []
    with httpx.Client(timeout=30.0) as client:
        for i in range(n + 20):
            started = time.perf_counter()
            response = client.post(url + "/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 20:  # warm-up
                times.append(elapsed)
    return times


async def _stream_rate(url: str, model: str, n: int, concurrency: int) -> float:
    body = {**_BODY, "model": model, "stream": True}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        async def one() -> None:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                tail = b""
                async for chunk in response.aiter_raw():
                    tail = (tail + chunk)[-32:]
                if not tail.endswith(sse.DONE):
                    raise RuntimeError("stream did not end with [DONE]")

        async def worker(jobs: list[int]) -> None:
            while jobs:
                jobs.pop()
                await one()

        warm = list(range(concurrency * 2))
        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
        jobs = list(range(n))
        started = time.perf_counter()
        await asyncio.gather(*(worker(jobs) for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-requests", type=int, default=300, help="requests per gateway measurement")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict[str, Any]:
    """`arena bench --mode gateway`."""
    print("\nGateway overhead against an instant fake upstream (16-chunk streams)")
    return run_overhead_bench(catalogue, requests=args.gateway_requests, concurrency=16)


def run_overhead_bench(catalogue: Catalogue, requests: int = 500, concurrency: int = 16) -> dict[str, Any]:
    """Measure, print and return the gateway's overhead ratios."""
    model = next(iter(catalogue.models))
    upstream_port, gateway_port = free_port(), free_port()
    log_dir = paths.log_dir("bench")
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        env = {"ARENA_GATEWAY_DB_PATH": str(Path(tmp) / "gw.sqlite3"), "ARENA_GATEWAY_REQUIRE_API_KEY": "false",
               "ARENA_GATEWAY_LOG_FORMAT": "json"}
        upstream = ChildProcess("fake-upstream", ["--port", str(upstream_port), "--model", model, "--chunks", "16",
                                                  "--slots", str(concurrency)], port=upstream_port, env=env,
                                module="tests.fake_upstream", log_path=log_dir / "fake-upstream.log")
        for key in catalogue.models:
            env[f"{env_key(key)}_API_URL"] = upstream.url if key == model else ""
        gateway = ChildProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(gateway_port)],
                               port=gateway_port, env=env, log_path=log_dir / "gateway.log", catalogue=catalogue.path)
        try:
            upstream.start().wait_ready("/health", timeout=60)
            gateway.start().wait_ready("/v1/models", timeout=60)
            deadline = time.monotonic() + 30
            while model not in httpx.get(gateway.url + "/v1/models").text and time.monotonic() < deadline:
                time.sleep(0.1)

            direct = _latencies(upstream.url, model, requests)
            through = _latencies(gateway.url, model, requests)
            direct_rate = asyncio.run(_stream_rate(upstream.url, model, requests, concurrency))
            gateway_rate = asyncio.run(_stream_rate(gateway.url, model, requests, concurrency))
        finally:
            gateway.stop(timeout=10)
            upstream.stop(timeout=10)

    direct_p50, gateway_p50 = statistics.median(direct) * 1000, statistics.median(through) * 1000
    result = {
        "requests": requests,
        "concurrency": concurrency,
        "direct_p50_ms": round(direct_p50, 3),
        "gateway_p50_ms": round(gateway_p50, 3),
        "added_p50_ms": round(gateway_p50 - direct_p50, 3),
        "latency_ratio": round(gateway_p50 / direct_p50, 3),
        "direct_stream_rps": round(direct_rate, 1),
        "gateway_stream_rps": round(gateway_rate, 1),
        "stream_rate_ratio": round(gateway_rate / direct_rate, 3),
        "goal_added_p50_ms": 1.0,
        "goal_stream_rate_ratio": 0.9,
    }
    result["meets_goals"] = result["added_p50_ms"] <= 1.0 and result["stream_rate_ratio"] >= 0.9
    print(f"non-streamed p50: direct {direct_p50:.2f} ms, through the gateway {gateway_p50:.2f} ms "
          f"(+{gateway_p50 - direct_p50:.2f} ms, ratio {result['latency_ratio']:.2f}; goal: at most +1 ms)")
    print(f"streamed, {concurrency} concurrent: direct {direct_rate:.0f} req/s, through the gateway "
          f"{gateway_rate:.0f} req/s (ratio {result['stream_rate_ratio']:.2f}; goal: at least 0.90)")
    return result
