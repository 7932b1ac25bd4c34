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
import time

import httpx

from services.bench_support import StreamResult, running_fleet, stream_chat
from shared.catalogue import Catalogue
from shared.core_share import CoreShare, available_cpus
STORY = "Write a long story about a lighthouse keeper and a storm. Use many details."
QUESTION = "What is the history of the city of Rome?"
LONG_PROMPT = ("Summarize the following notes in one sentence.\n" +
               "The harbour was busy that morning: boats came in with fish, traders argued about prices, "
               "children ran along the quay and gulls circled overhead. " * 12)


async def _story(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> StreamResult:
    return await stream_chat(client, url, {"model": model, "messages": [{"role": "user", "content": prompt}],
                                           "max_tokens": max_tokens, "temperature": 0},
                             headers={"Cache-Control": "no-store"})


def legacy_shares(count: int) -> list[CoreShare]:
    """Before fair sharing: every process a thread per core, unpinned, spinning."""
    return [CoreShare(max(1, len(available_cpus())), None, passive_wait=False)] * count


async def _pair_figures(url: str, a: str, b: str, tries: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=300) as client:
        await _story(client, url, a, "Hi", 4)
        await _story(client, url, b, "Hi", 4)
        alone = {a: (await _story(client, url, a, STORY, max_tokens)).rate(),
                 b: (await _story(client, url, b, QUESTION, max_tokens)).rate()}
        together = []
        for _ in range(tries):
            sa, sb = await asyncio.gather(_story(client, url, a, STORY, max_tokens),
                                          _story(client, url, b, QUESTION, max_tokens))
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
        await asyncio.gather(*(_story(client, url, model, f"{i}. {LONG_PROMPT}", max_tokens)
                               for i in range(prompts)))
        return round(time.perf_counter() - started, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cores (two models at once in the local fleet)")
    group.add_argument("--tries", type=int, default=3, help="attempts at asking two models at once")
    group.add_argument("--pair-tokens", type=int, default=64, help="max_tokens of each answer")
    group.add_argument("--long-prompts", type=int, default=8, help="prompts for one instance against two")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode cores`: run it and print the report."""
    results = _measure(args, catalogue)
    print_report(results)
    return results


def _measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    keys = list(catalogue.models)
    a, b = keys[0], keys[1]
    plan = {key: max(spec.instances, 1) for key, spec in catalogue.models.items() if key in (a, b)}
    count = sum(plan.values())
    results: dict = {"cores": len(available_cpus()), "fleet": plan}
    for mode, shares in (("before", legacy_shares(count)), ("after", None)):
        with running_fleet(catalogue, plan, f"cores/pair-{mode}", shares=shares) as url:
            results[mode] = {"pair": asyncio.run(_pair_figures(url, a, b, args.tries, args.pair_tokens))}
        one_shares = legacy_shares(1) if mode == "before" else None
        with running_fleet(catalogue, {a: 1}, f"cores/one-{mode}", shares=one_shares) as url:
            one = asyncio.run(_spread(url, a, args.long_prompts, args.pair_tokens))
        two_shares = legacy_shares(2) if mode == "before" else None
        with running_fleet(catalogue, {a: 2}, f"cores/two-{mode}", shares=two_shares) as url:
            two = asyncio.run(_spread(url, a, args.long_prompts, args.pair_tokens))
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
