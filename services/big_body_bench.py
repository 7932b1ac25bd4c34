"""`arena bench --mode bigbody`: how long a large request body stalls the event loop.

A client sends chat bodies at the body limit (4 MB: tens of thousands of short messages, the
costliest shape to parse and validate), one after another: `invalid` ones, refused for
`max_tokens: 0` once the whole body is validated, and `valid` ones, whose prompt is rendered and
tokenized too (then refused for its length), so no model time is spent. Meanwhile a probe asks
`/health/live` over and over: its slowest answer is how long the process's event loop stood
still, as every other client's stream would. Measured on a model service alone, then on a
gateway in front of one (the gateway parses the body for routing and its response cache).
The same probe with no large body gives the baseline.

Also `python -m services.big_body_bench [--big-bodies 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from services.bench_support import ms, running_fleet, running_service
from shared.catalogue import Catalogue, load_catalogue

MODEL = "smollm2-135m"
BODY_BYTES = 4 * 1024 * 1024 - 1024  # just under the services' and gateway's default limit


def big_chat_body(model: str, size: int = BODY_BYTES, max_tokens: int = 0) -> bytes:
    """A chat body of about `size` bytes made of short messages (with `max_tokens` 0, refused
    once validated)."""
    head = f'{{"model":{json.dumps(model)},"max_tokens":{max_tokens},"temperature":0,"messages":['.encode()
    tail = b"]}"
    item = b'{"role":"user","content":"hi"}'
    count = (size - len(head) - len(tail)) // (len(item) + 1)
    return head + b",".join([item] * count) + tail


async def _probe(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get(url + "/health/live")
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


async def stall(url: str, bodies: int, body: bytes) -> dict:
    """The probe's slowest answer with no large body, then while `bodies` are sent in turn."""
    async with httpx.AsyncClient(timeout=120) as prober, httpx.AsyncClient(timeout=120) as sender:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(prober, url, stop))
        await asyncio.sleep(1.0)  # a benchmark's quiet second, not a wait for a condition
        stop.set()
        idle = await probe
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(prober, url, stop))
        seconds, statuses = [], []
        for _ in range(bodies):
            started = time.perf_counter()
            response = await sender.post(url + "/v1/chat/completions", content=body,
                                         headers={"content-type": "application/json"})
            seconds.append(time.perf_counter() - started)
            statuses.append(response.status_code)
        stop.set()
        busy = await probe
    return {"statuses": sorted(set(statuses)), "body_seconds": [round(s, 3) for s in seconds],
            "idle_worst_ms": ms(max(idle)), "busy_worst_ms": ms(max(busy)), "probes_while_busy": len(busy)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("bigbody (the event loop while 4 MB bodies are validated)")
    group.add_argument("--big-bodies", type=int, default=4, help="large bodies sent, one after another")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    body, valid = big_chat_body(MODEL), big_chat_body(MODEL, max_tokens=1)
    with running_service(catalogue, MODEL, "bigbody-service") as url:
        service = asyncio.run(stall(url, args.big_bodies, body))
        service_valid = asyncio.run(stall(url, args.big_bodies, valid))
    with running_fleet(catalogue, {MODEL: 1}, "bigbody-fleet") as url:
        gateway = asyncio.run(stall(url, args.big_bodies, body))
    result = {"body_bytes": len(body), "service": service, "service valid": service_valid, "gateway": gateway}
    print_report(result)
    return result


def print_report(result: dict) -> None:
    print(f"\nThe event loop while {result['body_bytes']} byte bodies are parsed (slowest /health/live answer)")
    print(f"{'process, body':>14} {'idle ms':>8} {'busy ms':>8} {'probes':>7}  seconds per body")
    for name in ("service", "service valid", "gateway"):
        level = result[name]
        print(f"{name:>14} {level['idle_worst_ms']:>8} {level['busy_worst_ms']:>8} {level['probes_while_busy']:>7}  "
              f"{level['body_seconds']} (status {level['statuses']})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    measure(parser.parse_args(argv), load_catalogue())


if __name__ == "__main__":
    main()
