"""`arena bench cores`: do model processes on one machine share its cores fairly?

Runs the local fleet of `make run` (the catalogue's instances, through the gateway) twice, back
to back: first as it was before fair sharing (every process with a thread per core, unpinned,
llama.cpp's threads spinning while they wait), then with `shared.core_share`'s plan. In each:

- each of two models alone, then both asked at the same moment (the compare page's and every
  battle's load), three tries; decode speed is counted only while both streams are decoding;
- the same long prompts on one instance of a model, then spread over two instances on the same
  cores (aggregate wall time).

Goals (issue #14): together, each model keeps >= 40% of its speed alone in the worst try;
alone, neither loses more than 10% to fair sharing; two instances are never slower than one.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import httpx

from shared.catalogue import Catalogue, default_catalogue
from shared.core_share import CoreShare, available_cpus
from shared.local_fleet import LocalFleet
from shared.processes import PROJECT_ROOT, free_port

LOG_DIR = PROJECT_ROOT / "build" / "bench" / "cores"
STORY = "Write a long story about a lighthouse keeper and a storm. Use many details."
QUESTION = "What is the history of the city of Rome?"
LONG_PROMPT = ("Summarize the following notes in one sentence.\n" +
               "The harbour was busy that morning: boats came in with fish, traders argued about prices, "
               "children ran along the quay and gulls circled overhead. " * 12)


@dataclass
class Stream:
    stamps: list[float] = field(default_factory=list)   # arrival time of each content chunk

    def rate(self, start: float | None = None, end: float | None = None) -> float:
        """Chunks per second between its first and last chunk, or within [start, end]."""
        stamps = [t for t in self.stamps if (start is None or t >= start) and (end is None or t <= end)]
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return 0.0
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def stream_chat(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> Stream:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    result = Stream()
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                result.stamps.append(time.perf_counter())
    return result


def _free_block(size: int) -> int:
    """A port p with p .. p+size-1 all free (the local fleet numbers a model's instances so)."""
    for _ in range(50):
        base = free_port()
        ok = True
        for port in range(base, base + size):
            with closing(socket.socket()) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def _on_free_ports(catalogue: Catalogue, plan: dict[str, int]) -> Catalogue:
    models = {key: spec.model_copy(update={"port": _free_block(plan.get(key, 1))})
              for key, spec in catalogue.models.items()}
    return catalogue.model_copy(update={"models": models})


@contextmanager
def running_fleet(catalogue: Catalogue, plan: dict[str, int], shares: list[CoreShare] | None,
                  name: str) -> Iterator[str]:
    port = free_port()
    fleet = LocalFleet(_on_free_ports(catalogue, plan), plan, host="127.0.0.1", port=port,
                       log_dir=LOG_DIR / name, shares=shares)
    try:
        fleet.start()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=5) as client:  # the gateway routes once it has probed every instance
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                models = client.get(url + "/api/status").json()["models"]
                if all(m["ready_instances"] == plan[m["key"]] for m in models if m["key"] in plan):
                    break
                time.sleep(0.2)
        yield url
    finally:
        fleet.stop()


def legacy_shares(count: int) -> list[CoreShare]:
    """Before fair sharing: every process a thread per core, unpinned, spinning."""
    return [CoreShare(max(1, len(available_cpus())), None, passive_wait=False)] * count


async def _pair_figures(url: str, a: str, b: str, tries: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=300) as client:
        await stream_chat(client, url, a, "Hi", 4)
        await stream_chat(client, url, b, "Hi", 4)
        alone = {a: (await stream_chat(client, url, a, STORY, max_tokens)).rate(),
                 b: (await stream_chat(client, url, b, QUESTION, max_tokens)).rate()}
        together = []
        for _ in range(tries):
            sa, sb = await asyncio.gather(stream_chat(client, url, a, STORY, max_tokens),
                                          stream_chat(client, url, b, QUESTION, max_tokens))
            # Only while both decode: the one that ends first must not flatter the other.
            start = max(sa.stamps[0], sb.stamps[0]) if sa.stamps and sb.stamps else None
            end = min(sa.stamps[-1], sb.stamps[-1]) if sa.stamps and sb.stamps else None
            together.append({a: round(sa.rate(start, end), 1), b: round(sb.rate(start, end), 1)})
    worst = {m: min(t[m] for t in together) / alone[m] if alone[m] else 0.0 for m in (a, b)}
    return {"alone_tokens_per_s": {m: round(v, 1) for m, v in alone.items()}, "together_tokens_per_s": together,
            "worst_share_of_alone": {m: round(v, 2) for m, v in worst.items()}}


async def _spread(url: str, model: str, prompts: int, max_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(stream_chat(client, url, model, f"{i}. {LONG_PROMPT}", max_tokens)
                               for i in range(prompts)))
        return round(time.perf_counter() - started, 2)


def measure(args: argparse.Namespace, catalogue: Catalogue | None = None) -> dict:
    catalogue = catalogue or default_catalogue()
    keys = list(catalogue.models)
    a, b = keys[0], keys[1]
    plan = {key: max(spec.instances, 1) for key, spec in catalogue.models.items() if key in (a, b)}
    count = sum(plan.values())
    results: dict = {"cores": len(available_cpus()), "fleet": plan}
    for mode, shares in (("before", legacy_shares(count)), ("after", None)):
        with running_fleet(catalogue, plan, shares, f"pair-{mode}") as url:
            results[mode] = {"pair": asyncio.run(_pair_figures(url, a, b, args.tries, args.max_tokens))}
        one_shares = legacy_shares(1) if mode == "before" else None
        with running_fleet(catalogue, {a: 1}, one_shares, f"one-{mode}") as url:
            one = asyncio.run(_spread(url, a, args.long_prompts, args.max_tokens))
        with running_fleet(catalogue, {a: 2}, legacy_shares(2) if mode == "before" else None, f"two-{mode}") as url:
            two = asyncio.run(_spread(url, a, args.long_prompts, args.max_tokens))
        results[mode]["one_instance_s"], results[mode]["two_instances_s"] = one, two
    before_alone = results["before"]["pair"]["alone_tokens_per_s"]
    after_alone = results["after"]["pair"]["alone_tokens_per_s"]
    results["alone_after_vs_before"] = {m: round(after_alone[m] / before_alone[m], 2) if before_alone[m] else None
                                        for m in before_alone}
    return results


def print_report(results: dict) -> None:
    print(f"\nCores shared by the local fleet ({results['cores']} cores, "
          f"{', '.join(f'{k} x{n}' for k, n in results['fleet'].items())})")
    print(f"{'':8} {'model':<14} {'alone tok/s':>11} {'together, 3 tries':>24} {'worst/alone':>11}")
    for mode in ("before", "after"):
        pair = results[mode]["pair"]
        for model, alone in pair["alone_tokens_per_s"].items():
            tries = " ".join(f"{t[model]:>6}" for t in pair["together_tokens_per_s"])
            print(f"{mode:8} {model:<14} {alone:>11} {tries:>24} {pair['worst_share_of_alone'][model]:>11}")
    for mode in ("before", "after"):
        r = results[mode]
        print(f"{mode:8} long prompts: one instance {r['one_instance_s']} s, two instances {r['two_instances_s']} s")
    print(f"alone, after/before: {results['alone_after_vs_before']}")
