"""`arena bench fleet`: the local fleet of `make run` under a mixed load at rising concurrency,
through the gateway, until the gateway starts answering 503 (or the last level).

Each of C clients loops for `--seconds` per level, each time drawing (seeded) one of: a short
chat stream, a long one, a two-turn conversation over a document, or an arena battle (both
sides streamed at once), on a random ready model. Every request is a stream with usage; a
request counts as completed when it ends with a finish reason and `[DONE]`. Prints one table
(offered concurrency, completed requests/s, tokens/s, TTFT p50/p90, 503s, other errors),
writes it as JSON, and draws throughput and TTFT against concurrency as a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

import httpx

from services.bench_conversations import document
from services.bench_support import LOG_DIR, StreamResult, ms, percentile, read_stream, running_fleet, stream_chat
from shared.catalogue import Catalogue

PROMPTS = ["Write a short poem about rain.", "Explain how a bicycle works.", "What is the capital of France?",
           "Tell a story about a lost key.", "List three uses of salt.", "Describe a busy train station."]
NO_STORE = {"Cache-Control": "no-store"}  # measure the fleet, not the gateway's answer cache


class Workload:
    def __init__(self, url: str, models: list[str], rng: random.Random) -> None:
        self.url = url
        self.models = models
        self.rng = rng

    async def one(self, client: httpx.AsyncClient) -> list[StreamResult]:
        kind = self.rng.choice(["short", "long", "conversation", "battle"])
        model = self.rng.choice(self.models)
        prompt = self.rng.choice(PROMPTS)
        if kind in ("short", "long"):
            body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 16 if kind == "short" else 128, "temperature": 0.7}
            return [await stream_chat(client, self.url, body, headers=NO_STORE)]
        if kind == "conversation":
            messages = [{"role": "system", "content": document(self.rng.randrange(10**6), words=120)},
                        {"role": "user", "content": "What is this about?"}]
            first = await stream_chat(client, self.url, {"model": model, "messages": messages, "max_tokens": 32},
                                      headers=NO_STORE)
            if not first.ok:
                return [first]
            messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Say more."}]
            second = await stream_chat(client, self.url, {"model": model, "messages": messages, "max_tokens": 32},
                                       headers=NO_STORE)
            return [first, second]
        created = await client.post(self.url + "/api/battles", json={"prompt": prompt, "max_tokens": 48})
        if created.status_code != 201:
            return [StreamResult(status=created.status_code)]
        battle = created.json()
        token = {"X-Battle-Token": battle.get("token", "")}  # the arena asks for it to stream a side
        return list(await asyncio.gather(*(read_stream(client, self.url + side["stream_url"], None, token)
                                           for side in battle["sides"].values())))


async def run_level(url: str, models: list[str], concurrency: int, seconds: float, seed: int) -> dict:
    results: list[StreamResult] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=2 * concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def loop(index: int) -> None:
            workload = Workload(url, models, random.Random(seed * 1000 + index))
            while time.perf_counter() < deadline:
                try:
                    results.extend(await workload.one(client))
                except httpx.HTTPError:
                    results.append(StreamResult(status=-1))

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        wall = time.perf_counter() - started
    done = [r for r in results if r.ok]
    ttfts = [r.ttft for r in done if r.ttft is not None]
    tokens = sum((r.usage or {}).get("completion_tokens", len(r.stamps)) for r in done)
    return {"concurrency": concurrency, "requests": len(results), "completed": len(done),
            "requests_per_s": round(len(done) / wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "ttft_p50_ms": ms(percentile(ttfts, 0.5)), "ttft_p90_ms": ms(percentile(ttfts, 0.9)),
            "rejected_503": sum(r.status == 503 for r in results),
            "errors": sum(not r.ok and r.status != 503 for r in results), "wall_s": round(wall, 1)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fleet (mixed load through the gateway at rising concurrency)")
    group.add_argument("--fleet-levels", default="1,2,4,8,16,32,64", help="concurrent clients per level")
    group.add_argument("--seconds", type=float, default=15, help="seconds per level")
    group.add_argument("--chart", type=Path, default=None, help=f"PNG chart (default: {DEFAULT_CHART})")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode fleet`: run it, print the table and draw the chart."""
    results = _measure(args, catalogue)
    print_report(results)
    chart = draw_chart(results, args.chart or DEFAULT_CHART)
    print(f"chart: {chart}")
    results["chart"] = str(chart)
    return results


def _measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    plan = {key: spec.instances for key, spec in catalogue.models.items() if spec.instances}
    levels = [int(x) for x in args.fleet_levels.split(",")]
    rows = []
    with running_fleet(catalogue, plan, "fleet") as url:
        for concurrency in levels:
            row = asyncio.run(run_level(url, list(plan), concurrency, args.seconds, seed=concurrency))
            rows.append(row)
            print(f"  concurrency {concurrency}: {row['requests_per_s']} req/s, {row['tokens_per_s']} tok/s, "
                  f"{row['rejected_503']} x 503", flush=True)
            if row["rejected_503"]:
                break
    return {"fleet": plan, "seconds_per_level": args.seconds, "levels": rows}


def print_report(results: dict) -> None:
    print(f"\nFleet under mixed load through the gateway ({', '.join(f'{k} x{n}' for k, n in results['fleet'].items())}"
          f", {results['seconds_per_level']} s per level)")
    print(f"{'clients':>7} {'req/s':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p90':>9} {'503s':>5} {'errors':>6}")
    for r in results["levels"]:
        print(f"{r['concurrency']:>7} {r['requests_per_s']:>7} {r['tokens_per_s']:>7} {r['ttft_p50_ms']!s:>7}ms "
              f"{r['ttft_p90_ms']!s:>7}ms {r['rejected_503']:>5} {r['errors']:>6}")


def draw_chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["levels"]
    x = [r["concurrency"] for r in rows]
    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(10, 4))
    throughput.plot(x, [r["tokens_per_s"] for r in rows], marker="o", label="tokens/s")
    throughput.set_xlabel("concurrent clients")
    throughput.set_ylabel("tokens/s")
    twin = throughput.twinx()
    twin.plot(x, [r["requests_per_s"] for r in rows], marker="s", color="tab:orange", label="requests/s")
    twin.set_ylabel("completed requests/s")
    throughput.set_title("Throughput")
    for q in ("p50", "p90"):
        latency.plot(x, [(r[f"ttft_{q}_ms"] or 0) / 1000 for r in rows], marker="o", label=f"TTFT {q}")
    latency.set_xlabel("concurrent clients")
    latency.set_ylabel("seconds")
    latency.set_title("Time to first token")
    latency.legend()
    throughput.legend(loc="upper left")
    twin.legend(loc="lower right")
    for axis in (throughput, latency):
        axis.set_xscale("log", base=2)
        axis.set_xticks(x, [str(c) for c in x])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


DEFAULT_CHART = LOG_DIR / "fleet.png"
