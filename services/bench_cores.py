"""`arena bench cores`: do model processes on one machine share its cores fairly?

First each of two models alone on the machine (a fleet of that one instance, every core: the
reference), then the local fleet of `make run` (the catalogue's instances, through the gateway)
under each plan of sharing, back to back:

- before: as it was before fair sharing (every process a thread per core, unpinned, llama.cpp's
  threads spinning while they wait);
- fixed: `shared.core_share`'s fixed shares (the cores divided among the instances; `fleet.shared_threads: false`);
- shared: threads that follow how many instances are busy, each holding a core token
  (`shared.core_board`; `fleet.shared_threads: true`, the default).

In each: each model asked alone in the fleet (the better of two answers, as for the machine),
then both at the same moment (the compare page's and every battle's load), `--tries` times,
decode speed counted only while both streams are decoding; when they do not overlap at all
(one made no token until the other had finished: the "0 tok/s" of shared threads before core
tokens), the one that waited counts 0 and the other its own speed. Then the same long prompts
spread over two instances of one model (against one instance alone on the machine).

Goals (issue #14), in the JSON's `goals` per plan: together, each model keeps >= 40% of its
speed alone on the machine in the worst try; alone in the fleet, neither loses more than 10% of
it; two instances are never slower than one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx

from services.bench_support import StreamResult, running_fleet, stream_chat
from shared.catalogue import Catalogue
from shared.core_share import CoreShare, available_cpus, share_cores

STORY = "Write a long story about a lighthouse keeper and a storm. Use many details."
# (Was "What is the history of the city of Rome?": gemma3-270m answered it in 20 tokens, too
# short a window for 64 of the other model's.)
QUESTION = "Write a long story about a baker who opens a shop in a small mountain village."
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


PROMPTS = (STORY, QUESTION)   # the first model is asked the first, the second the second
PLANS = ("before", "fixed", "shared")


def plan_shares(plan: str, explicit_threads: list[int | None]) -> list[CoreShare]:
    if plan == "before":
        return legacy_shares(len(explicit_threads))
    return share_cores(explicit_threads, available_cpus(), dynamic=plan == "shared")


async def _alone(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> float:
    """The better of two answers (after a warm-up): one answer's speed varies with what else the
    machine does for that second."""
    await _story(client, url, model, "Hi", 4)  # warm-up
    return max([(await _story(client, url, model, prompt, max_tokens)).rate() for _ in range(2)])


def together_rates(sa: StreamResult, sb: StreamResult) -> tuple[float, float, float]:
    """Each stream's tokens/s while both were decoding, and how long that was (s). Streams that
    never overlap: the later one made no progress while the earlier ran, so 0 for it and the
    earlier one's own speed."""
    if not sa.stamps or not sb.stamps:
        return sa.rate(), sb.rate(), 0.0
    start, end = max(sa.stamps[0], sb.stamps[0]), min(sa.stamps[-1], sb.stamps[-1])
    if end <= start:
        return (sa.rate(), 0.0, 0.0) if sa.stamps[0] <= sb.stamps[0] else (0.0, sb.rate(), 0.0)
    return sa.rate(start, end), sb.rate(start, end), end - start


async def _pair_figures(url: str, a: str, b: str, tries: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=300) as client:
        alone = {a: await _alone(client, url, a, STORY, max_tokens), b: await _alone(client, url, b, QUESTION, max_tokens)}
        together, overlaps, tokens = [], [], []
        for _ in range(tries):
            sa, sb = await asyncio.gather(_story(client, url, a, STORY, max_tokens),
                                          _story(client, url, b, QUESTION, max_tokens))
            # Only while both decode: the one that ends first must not flatter the other.
            rate_a, rate_b, overlap = together_rates(sa, sb)
            together.append({a: round(rate_a, 1), b: round(rate_b, 1)})
            overlaps.append(round(overlap, 2))
            tokens.append({a: len(sa.stamps), b: len(sb.stamps)})
    worst = {m: min(t[m] for t in together) / alone[m] if alone[m] else 0.0 for m in (a, b)}
    return {"alone_tokens_per_s": {m: round(v, 1) for m, v in alone.items()}, "together_tokens_per_s": together,
            "together_overlap_s": overlaps, "together_tokens": tokens,
            "worst_share_of_alone": {m: round(v, 2) for m, v in worst.items()}}


async def _spread(url: str, model: str, prompts: int, max_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(_story(client, url, model, f"{i}. {LONG_PROMPT}", max_tokens)
                               for i in range(prompts)))
        return round(time.perf_counter() - started, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cores (two models at once in the local fleet)")
    group.add_argument("--tries", type=_positive, default=3, help="attempts at asking two models at once")
    group.add_argument("--pair-tokens", type=int, default=64, help="max_tokens of each answer")
    group.add_argument("--long-prompts", type=int, default=8, help="prompts for one instance against two")
    group.add_argument("--plans", default=",".join(PLANS), type=_plans,
                       help=f"ways of sharing the cores to compare, of {', '.join(PLANS)} (default: all)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a count of at least 1, not {text!r}")
    return int(text)


def _plans(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    if not chosen or set(chosen) - set(PLANS):
        raise argparse.ArgumentTypeError(f"plans are some of {', '.join(PLANS)}, not {text!r}")
    return chosen


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode cores`: run it and print the report."""
    results = _measure(args, catalogue)
    print_report(results)
    return results


def _measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    keys = list(catalogue.models)
    a, b = keys[0], keys[1]
    plan = {key: max(spec.instances, 1) for key, spec in catalogue.models.items() if key in (a, b)}
    explicit = [catalogue.model(key).threads for key, count in plan.items() for _ in range(count)]
    started = time.monotonic()
    results: dict = {"cores": len(available_cpus()), "fleet": plan, "tries": args.tries,
                     "pair_tokens": args.pair_tokens, "load_average": {"start": _load()}, "machine": {}}
    # Each model alone on the machine: the speed sharing should not take away.
    for model, prompt in zip((a, b), PROMPTS):
        with running_fleet(catalogue, {model: 1}, f"cores/machine-{model}") as url:
            results["machine"][model] = {"alone_tokens_per_s": round(asyncio.run(_alone_once(url, model, prompt,
                                                                                              args.pair_tokens)), 1)}
            if model == a:
                results["machine"][model]["long_prompts_s"] = asyncio.run(_spread(url, a, args.long_prompts,
                                                                                  args.pair_tokens))
    for name in args.plans:
        with running_fleet(catalogue, plan, f"cores/pair-{name}", shares=plan_shares(name, explicit)) as url:
            pair = asyncio.run(_pair_figures(url, a, b, args.tries, args.pair_tokens))
        machine = {m: results["machine"][m]["alone_tokens_per_s"] for m in (a, b)}
        pair["alone_in_fleet_share"] = {m: round(pair["alone_tokens_per_s"][m] / machine[m], 2) if machine[m] else None
                                        for m in (a, b)}
        pair["worst_share_of_machine"] = {
            m: round(min(t[m] for t in pair["together_tokens_per_s"]) / machine[m], 2) if machine[m] else None
            for m in (a, b)}
        two_explicit = [catalogue.model(a).threads] * 2
        with running_fleet(catalogue, {a: 2}, f"cores/two-{name}", shares=plan_shares(name, two_explicit)) as url:
            pair["two_instances_s"] = asyncio.run(_spread(url, a, args.long_prompts, args.pair_tokens))
        pair["goals"] = {
            "alone_at_least_0.9_of_machine": all(v is not None and v >= 0.9
                                                 for v in pair["alone_in_fleet_share"].values()),
            "together_at_least_0.4_of_machine": all(v is not None and v >= 0.4
                                                    for v in pair["worst_share_of_machine"].values()),
            "two_instances_not_slower_than_one": pair["two_instances_s"] <= results["machine"][a]["long_prompts_s"]}
        results[name] = pair
    results["load_average"]["end"] = _load()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


async def _alone_once(url: str, model: str, prompt: str, max_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=300) as client:
        return await _alone(client, url, model, prompt, max_tokens)


def print_report(results: dict) -> None:
    print(f"\nCores shared by the local fleet ({results['cores']} cores, "
          f"{', '.join(f'{k} x{n}' for k, n in results['fleet'].items())})")
    machine = results["machine"]
    print(f"{'plan':8} {'model':<14} {'alone tok/s':>11} {'alone/machine':>13} {'together, each try':>24} "
          f"{'worst/alone':>11} {'worst/machine':>13}")
    for model, figures in machine.items():
        print(f"{'machine':8} {model:<14} {figures['alone_tokens_per_s']:>11} {'1.0':>13}")
    plans = [name for name in PLANS if name in results]
    for name in plans:
        pair = results[name]
        for model, alone in pair["alone_tokens_per_s"].items():
            tries = " ".join(f"{t[model]:>6}" for t in pair["together_tokens_per_s"])
            print(f"{name:8} {model:<14} {alone:>11} {pair['alone_in_fleet_share'][model]:>13} {tries:>24} "
                  f"{pair['worst_share_of_alone'][model]:>11} {pair['worst_share_of_machine'][model]:>13}")
    one = next(iter(machine.values()))["long_prompts_s"]
    print(f"{len(results[plans[0]]['together_tokens_per_s']) if plans else 0} tries; long prompts on one instance: "
          f"{one} s; on two: " + ", ".join(f"{name} {results[name]['two_instances_s']} s" for name in plans))
    for name in plans:
        print(f"alone in the fleet / alone on the machine, {name}: "
              + ", ".join(f"{m} {v}" for m, v in results[name]["alone_in_fleet_share"].items())
              + f"; seconds both streamed, each try: {results[name]['together_overlap_s']}")
    for name in plans:
        print(f"goals, {name}: " + ", ".join(f"{goal} {'met' if met else 'NOT met'}"
                                             for goal, met in results[name]["goals"].items()))
    print(f"load average {results['load_average']['start']} at the start, {results['load_average']['end']} at the "
          f"end (a quiet machine: under 1); {results['seconds']} s")
