"""`arena bench [SUITE]`: throughput and latency of a model service under 1, 4 and 8 concurrent
streams (`service`), what the gateway adds in front of an instant upstream (`gateway`), how the
local fleet shares the cores (`cores`, `services.bench_cores`), multi-turn conversations with the
prompt cache and prefix affinity off and on (`conversations`, `services.bench_conversations`),
and the whole fleet under a mixed load at rising concurrency (`fleet`, `services.bench_fleet`).
`all` runs every one of them, one after the other.

Each level runs closed-loop streams (every client sends its next request when the previous one
ends) with greedy sampling, a fixed `max_tokens` and prompts that invite long answers; a stream
counts as complete only when it ends with a finish reason and `[DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.processes import PROJECT_ROOT, ChildProcess, free_port

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


SUITES = ["service", "gateway", "cores", "conversations", "fleet"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", help=f"what to measure: all (default), or some of {', '.join(SUITES)} "
                                                 "separated by commas")
    parser.add_argument("--mode", default="all", help="same as SUITE")
    parser.add_argument("--model", default="smollm2-135m", help="catalogue key (service mode)")
    parser.add_argument("--url", help="benchmark this running service instead of starting one")
    parser.add_argument("--levels", default="1,4,8", help="concurrent streams per level")
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--gateway-requests", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    cores = parser.add_argument_group("cores")
    cores.add_argument("--tries", type=int, default=3, help="attempts at asking two models at once")
    cores.add_argument("--pair-tokens", type=int, default=64, help="max_tokens of each answer")
    cores.add_argument("--long-prompts", type=int, default=8, help="prompts for one instance against two")
    talk = parser.add_argument_group("conversations")
    talk.add_argument("--conversations", type=int, default=24)
    talk.add_argument("--turns", type=int, default=3)
    talk.add_argument("--concurrency", type=int, default=8)
    talk.add_argument("--answer-tokens", type=int, default=48, help="max_tokens of each turn's answer")
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--fleet-levels", default="1,2,4,8,16,32,64", help="concurrent clients per level")
    fleet.add_argument("--seconds", type=float, default=15, help="seconds per level")
    fleet.add_argument("--chart", type=Path, default=None, help="PNG chart (default: build/bench/fleet.png)")


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
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
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


def bench_service(args: argparse.Namespace) -> dict:
    levels = [int(x) for x in args.levels.split(",")]
    service = None
    url = args.url
    if not url:
        port = free_port()
        service = ChildProcess(f"bench-{args.model}", ["serve", args.model, "--port", str(port),
                                                       "--parallel", str(max(levels))],
                               port=port, log_path=PROJECT_ROOT / "build" / "bench" / f"{args.model}.log")
        service.start().wait_ready()
        url = service.url
    try:
        asyncio.run(run_level(url, args.model, 1, 1, 16))  # warm-up
        rows = [asyncio.run(run_level(url, args.model, n, args.requests_per_stream, args.max_tokens)) for n in levels]
    finally:
        if service:
            service.stop()
    print(f"\nModel service: {args.model}, max_tokens {args.max_tokens}, temperature 0, streaming")
    print(f"{'streams':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p90':>9} {'lat p50':>9} {'lat p99':>9} {'complete':>9}")
    for row in rows:
        print(f"{row['streams']:>7} {row['tokens_per_s']:>8} {row['ttft_p50_ms']:>7}ms {row['ttft_p90_ms']:>7}ms "
              f"{row['latency_p50_ms']:>7}ms {row['latency_p99_ms']:>7}ms {row['complete']:>4}/{row['requests']}")
    by_streams = {row["streams"]: row for row in rows}
    result = {"model": args.model, "max_tokens": args.max_tokens, "levels": rows}
    if 1 in by_streams and max(levels) in by_streams and max(levels) > 1:
        ratio = by_streams[max(levels)]["tokens_per_s"] / by_streams[1]["tokens_per_s"]
        result[f"ratio_{max(levels)}_to_1"] = round(ratio, 2)
        print(f"{max(levels)}-stream / 1-stream throughput: {ratio:.2f}x")
    return result


def bench_gateway(args: argparse.Namespace) -> dict:
    from gateway.overhead_bench import run_overhead_bench

    print("\nGateway overhead against an instant fake upstream (16-chunk streams)")
    return run_overhead_bench(requests=args.gateway_requests, concurrency=16)


def bench_cores(args: argparse.Namespace) -> dict:
    from services import bench_cores

    results = bench_cores.measure(args)
    bench_cores.print_report(results)
    return results


def bench_conversations(args: argparse.Namespace) -> dict:
    from services import bench_conversations

    results = bench_conversations.measure(args)
    bench_conversations.print_report(results)
    return results


def bench_fleet(args: argparse.Namespace) -> dict:
    from services import bench_fleet

    results = bench_fleet.measure(args)
    bench_fleet.print_report(results)
    chart = bench_fleet.draw_chart(results, args.chart or bench_fleet.DEFAULT_CHART)
    print(f"chart: {chart}")
    results["chart"] = str(chart)
    return results


def run(args: argparse.Namespace) -> int:
    chosen = (args.suite or args.mode).split(",")
    unknown = set(chosen) - {*SUITES, "all"}
    if unknown:
        print(f"unknown benchmark {', '.join(sorted(unknown))}; known: all, {', '.join(SUITES)}", file=sys.stderr)
        return 2
    results = {}
    for name, bench in (("service", bench_service), ("gateway", bench_gateway), ("cores", bench_cores),
                        ("conversations", bench_conversations), ("fleet", bench_fleet)):
        if name in chosen or "all" in chosen:
            results[name] = bench(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0
