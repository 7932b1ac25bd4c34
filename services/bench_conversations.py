"""`arena bench conversations`: multi-turn conversations through the gateway, with the RAM
prompt cache and prefix-affinity routing off, then on.

The workload of issue #14: two instances of a model (its catalogue slots each), N
conversations each opened with its own document of ~300 tokens, C requests at a time, turn by
turn (every conversation's turn 1, then every turn 2, ...). Off means `prompt_cache_mb: 0` on
the instances and the `least-busy` balancer; on means the catalogue's cache and
`prefix-affinity`. Figures: the share of turn-2+ prompt tokens served from cache
(`cached_tokens` / `prompt_tokens`), turn-2+ time to first token p50/p90, and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx

from services.bench_support import ms, percentile, running_fleet, stream_chat
from shared.catalogue import Catalogue, env_key

WORDS = ("harbour river mountain market garden library station bridge forest village castle meadow "
         "engine lantern orchard quarry bakery tower canal island valley workshop school chapel").split()
QUESTIONS = ["What is this document about?", "Which places does it mention?", "Summarize it in one sentence.",
             "What happens first?", "Name one detail."]


def document(index: int, words: int = 220) -> str:
    """A distinct document of about 300 tokens (a seeded random walk over words)."""
    rng = random.Random(index)
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        picked = rng.sample(WORDS, 6)
        sentences.append(f"The {picked[0]} near the {picked[1]} was quiet until the {picked[2]} opened; "
                         f"then the {picked[3]}, the {picked[4]} and the {picked[5]} were busy all day.")
    return f"Document {index}:\n" + " ".join(sentences)


async def _run(url: str, model: str, conversations: int, turns: int, concurrency: int, max_tokens: int) -> dict:
    histories = [[{"role": "system", "content": document(i)}] for i in range(conversations)]
    turn_figures = []
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        for turn in range(turns):
            async def one(i: int):
                async with gate:
                    messages = histories[i] + [{"role": "user", "content": QUESTIONS[(i + turn) % len(QUESTIONS)]}]
                    result = await stream_chat(client, url, {"model": model, "messages": messages,
                                                             "max_tokens": max_tokens, "temperature": 0})
                    histories[i] = messages + [{"role": "assistant", "content": result.text}]
                    return result

            results = await asyncio.gather(*(one(i) for i in range(conversations)))
            turn_figures.append(results)
    wall = time.perf_counter() - started
    later = [r for results in turn_figures[1:] for r in results]
    prompt = sum((r.usage or {}).get("prompt_tokens", 0) for r in later)
    cached = sum(r.cached_tokens for r in later)
    ttfts = [r.ttft for r in later if r.ttft is not None]
    first = [r.ttft for r in turn_figures[0] if r.ttft is not None]
    return {
        "requests": sum(len(t) for t in turn_figures),
        "failed": sum(not r.ok for t in turn_figures for r in t),
        "turn1_ttft_p50_ms": ms(percentile(first, 0.5)),
        "later_turns_prompt_tokens": prompt,
        "later_turns_cached_tokens": cached,
        "later_turns_cached_share": round(cached / prompt, 3) if prompt else None,
        "later_turns_ttft_p50_ms": ms(percentile(ttfts, 0.5)),
        "later_turns_ttft_p90_ms": ms(percentile(ttfts, 0.9)),
        "wall_s": round(wall, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("conversations (prompt cache and prefix affinity off and on)")
    group.add_argument("--conversations", type=int, default=24)
    group.add_argument("--turns", type=int, default=3)
    group.add_argument("--concurrency", type=int, default=8)
    group.add_argument("--answer-tokens", type=int, default=48, help="max_tokens of each turn's answer")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode conversations`: run it and print the report."""
    results = _measure(args, catalogue)
    print_report(results)
    return results


def _measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    model = args.model
    off = {f"ARENA_MODEL_{env_key(model)}__PROMPT_CACHE_MB": "0", "ARENA_GATEWAY_BALANCER": "least-busy"}
    results = {"model": model, "instances": 2, "conversations": args.conversations, "turns": args.turns,
               "concurrency": args.concurrency, "max_tokens": args.answer_tokens}
    for mode, env in (("off", off), ("on", {})):
        with running_fleet(catalogue, {model: 2}, f"conversations-{mode}", env=env) as url:
            results[mode] = asyncio.run(_run(url, model, args.conversations, args.turns, args.concurrency,
                                             args.answer_tokens))
    return results


def print_report(results: dict) -> None:
    print(f"\nConversations through the gateway: {results['model']} x{results['instances']}, "
          f"{results['conversations']} conversations x {results['turns']} turns, {results['concurrency']} at a time")
    print(f"{'cache+affinity':<15} {'turn2+ cached':>13} {'turn2+ TTFT p50':>15} {'p90':>9} {'wall':>7} {'failed':>6}")
    for mode in ("off", "on"):
        r = results[mode]
        print(f"{mode:<15} {r['later_turns_cached_share']!s:>13} {r['later_turns_ttft_p50_ms']!s:>13}ms "
              f"{r['later_turns_ttft_p90_ms']!s:>7}ms {r['wall_s']:>6}s {r['failed']:>6}")
