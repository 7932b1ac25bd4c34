"""`arena bench --mode service`: throughput and latency of a model service under 1, 4 and 8
concurrent streams, on each engine (llama-cpp-python in process, llama-server as a child).

Each level runs closed-loop streams (every client sends its next request when the previous one
ends) with greedy sampling, a fixed `max_tokens` and prompts that invite long answers; a stream
counts as complete only when it ends with a finish reason and `[DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass

import httpx

from services.bench_support import LOG_DIR, running_service
from shared.catalogue import Catalogue
from shared.processes import ChildProcess, free_port
from shared.sse import DONE_PAYLOAD, read_events

PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain in detail how a steam engine works.",
    "Describe a walk through a busy city market.",
    "Write a long letter to a friend about a summer holiday.",
    "Explain the rules of chess step by step.",
    "Tell the history of a small fishing village.",
    "Describe how bread is baked, from flour to loaf.",
    "Write a long poem about the sea and the wind.",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="catalogue key (service mode)")
    parser.add_argument("--url", help="benchmark this running service instead of starting one")
    parser.add_argument("--levels", default="1,4,8", help="concurrent streams per level")
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--engines", default="llama-cpp-python,llama-server",
                        help="engines to start the service on, in turn (not with --url)")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="times to start the service from `arena serve` to ready, per engine (0: none)")


@dataclass
class StreamResult:
    tokens: int
    ttft: float
    latency: float
    complete: bool


async def _one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> StreamResult:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft = None
    tokens = 0
    finish = None
    done = False
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for payload in read_events(response.aiter_bytes()):
            if payload == DONE_PAYLOAD:
                done = True
            else:
                chunk = json.loads(payload)
                if "error" in chunk:
                    break
                for choice in chunk.get("choices", []):
                    if choice["delta"].get("content") and ttft is None:
                        ttft = time.perf_counter() - started
                    finish = choice.get("finish_reason") or finish
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    latency = time.perf_counter() - started
    return StreamResult(tokens, ttft or latency, latency, done and finish in ("stop", "length"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_level(url: str, model: str, streams: int, per_stream: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=streams + 2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        results: list[StreamResult] = []

        async def client_loop(index: int) -> None:
            for i in range(per_stream):
                prompt = PROMPTS[(index + i * streams) % len(PROMPTS)]
                results.append(await _one_stream(client, url, model, prompt, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i) for i in range(streams)))
        wall = time.perf_counter() - started
    tokens = sum(r.tokens for r in results)
    return {
        "streams": streams,
        "requests": len(results),
        "complete": sum(r.complete for r in results),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(_pct([r.ttft for r in results], 0.5) * 1000, 1),
        "ttft_p90_ms": round(_pct([r.ttft for r in results], 0.9) * 1000, 1),
        "latency_p50_ms": round(_pct([r.latency for r in results], 0.5) * 1000, 1),
        "latency_p99_ms": round(_pct([r.latency for r in results], 0.99) * 1000, 1),
    }


def measure_engine(args: argparse.Namespace, catalogue: Catalogue, engine: str | None) -> dict:
    """Every level on one service: a running one (`--url`), or one started on `engine`."""
    levels = [int(x) for x in args.levels.split(",")]
    service = nullcontext(args.url) if args.url else \
        running_service(catalogue, args.model, f"bench-{args.model}-{engine}", "--parallel", str(max(levels)),
                        "--engine", engine)
    with service as url:
        asyncio.run(run_level(url, args.model, 1, 1, 16))  # warm-up
        rows = [asyncio.run(run_level(url, args.model, n, args.requests_per_stream, args.max_tokens)) for n in levels]
    print(f"\nModel service: {args.model} on {engine or args.url}, max_tokens {args.max_tokens}, temperature 0, "
          "streaming")
    print(f"{'streams':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p90':>9} {'lat p50':>9} {'lat p99':>9} {'complete':>9}")
    for row in rows:
        print(f"{row['streams']:>7} {row['tokens_per_s']:>8} {row['ttft_p50_ms']:>7}ms {row['ttft_p90_ms']:>7}ms "
              f"{row['latency_p50_ms']:>7}ms {row['latency_p99_ms']:>7}ms {row['complete']:>4}/{row['requests']}")
    by_streams = {row["streams"]: row for row in rows}
    result: dict = {"levels": rows}
    if 1 in by_streams and max(levels) in by_streams and max(levels) > 1:
        ratio = by_streams[max(levels)]["tokens_per_s"] / by_streams[1]["tokens_per_s"]
        result[f"ratio_{max(levels)}_to_1"] = round(ratio, 2)
        print(f"{max(levels)}-stream / 1-stream throughput: {ratio:.2f}x")
    return result


COLD_START_POLL = 0.01  # s between readiness probes: finer than wait_ready's, for a sub-second figure


def cold_start(catalogue: Catalogue, model: str, engine: str) -> float:
    """Seconds from starting `arena serve MODEL` (a new process: interpreter, imports, the
    model's load, the prompt cache set up) to its first 200 on /health."""
    port = free_port()
    service = ChildProcess(f"cold-{model}-{engine}", ["serve", model, "--port", str(port), "--engine", engine],
                           port=port, log_path=LOG_DIR / f"cold-{model}-{engine}.log", catalogue=catalogue.path)
    started = time.perf_counter()
    service.start()
    try:
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() - started < 180:
                if not service.running:
                    raise RuntimeError(f"{service.name} exited while starting:\n{service.log_tail()}")
                try:
                    if client.get(service.url + "/health").status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(COLD_START_POLL)
        raise TimeoutError(f"{service.name} not ready after 180 s:\n{service.log_tail()}")
    finally:
        service.stop()


def measure_cold_starts(args: argparse.Namespace, catalogue: Catalogue, engine: str) -> dict:
    times = sorted(cold_start(catalogue, args.model, engine) for _ in range(args.cold_starts))
    median = times[len(times) // 2]
    print(f"Cold start, `arena serve {args.model}` on {engine} to ready: median {median:.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
    return {"cold_start_s": round(median, 3), "cold_start_runs_s": [round(t, 3) for t in times]}


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """The first engine's figures at the top level (as before engines were compared), and every
    engine's under `engines`."""
    engines = [None] if args.url else [e.strip() for e in args.engines.split(",") if e.strip()]
    by_engine = {engine or "url": measure_engine(args, catalogue, engine) for engine in engines}
    if args.cold_starts > 0:
        for engine in engines:
            if engine:
                by_engine[engine].update(measure_cold_starts(args, catalogue, engine))
    first = next(iter(by_engine.values()))
    return {"model": args.model, "max_tokens": args.max_tokens, **first, "engines": by_engine}
