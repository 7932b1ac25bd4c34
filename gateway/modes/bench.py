"""`arena bench --mode modes`: how parallel a council really is, its answer phase against its
slowest and summed answers.

Starts the local fleet of `make run` (or, as `python -m gateway.modes.bench --gateway URL`,
uses a running gateway) and runs councils of three through the gateway, printing per run the
answer phase's wall time (first answer started to last answer ended, from the stream's own `t`
stamps), the slowest answer's time and the sum of the three. Parallel answers make the wall
time close to the slowest answer, not the sum. Answers of a model share its instance's CPU, so
on a small machine each answer is slower in a council than alone: the ratio to the slowest
answer is the figure that says whether the gateway serialises anything.
"""

from __future__ import annotations

import argparse
import json
import statistics

import httpx

from services.bench_support import running_fleet
from shared.catalogue import Catalogue

QUESTION = "Explain in two sentences why the sky is blue."


def council_once(gateway: str, participants: list[str], question: str, max_tokens: int) -> dict[str, float]:
    events = []
    with httpx.stream("POST", f"{gateway.rstrip('/')}/api/modes/council", timeout=600,
                      json={"question": question, "participants": participants, "max_tokens": max_tokens,
                            "temperature": 0}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    starts = [e for e in events if e["type"] == "turn_start" and e["role"] == "answer"]
    ends = [e for e in events if e["type"] == "turn_end" and e["role"] == "answer"]
    wall = max(e["t"] for e in ends) - min(e["t"] for e in starts)
    return {"wall_s": round(wall, 2), "slowest_s": round(max(e["seconds"] for e in ends), 2),
            "sum_s": round(sum(e["seconds"] for e in ends), 2), "session_s": round(events[-1]["seconds"], 2)}


def run(gateway: str, participants: list[str], runs: int, max_tokens: int) -> dict:
    rows = [council_once(gateway, participants, QUESTION, max_tokens) for _ in range(runs)]
    return {"participants": participants, "max_tokens": max_tokens, "runs": rows,
            "wall_to_slowest_median": round(statistics.median(r["wall_s"] / r["slowest_s"] for r in rows), 2),
            "wall_to_sum_median": round(statistics.median(r["wall_s"] / r["sum_s"] for r in rows), 2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("modes (councils of three through the local fleet)")
    group.add_argument("--council-runs", type=int, default=3, help="councils to run")
    group.add_argument("--council-tokens", type=int, default=64, help="max_tokens of each answer")


def _participants(catalogue: Catalogue) -> list[str]:
    """Two of the local fleet's models, the first twice (SmolLM2, Gemma, SmolLM2 in `make run`)."""
    local = [key for key, spec in catalogue.models.items() if spec.instances > 0][:2]
    return [local[0], local[-1], local[0]]


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode modes`: start the local fleet, run it and print the report."""
    participants = _participants(catalogue)
    plan = {key: catalogue.models[key].instances for key in dict.fromkeys(participants)}
    with running_fleet(catalogue, plan, "modes") as url:
        result = run(url, participants, args.council_runs, args.council_tokens)
    print_report(result)
    return result


def print_report(result: dict) -> None:
    print(f"\nCouncils of {', '.join(result['participants'])}, max_tokens {result['max_tokens']}: answer phase")
    print(f"{'run':>3} {'wall s':>7} {'slowest s':>9} {'sum s':>7} {'session s':>9}")
    for i, r in enumerate(result["runs"], 1):
        print(f"{i:>3} {r['wall_s']:>7} {r['slowest_s']:>9} {r['sum_s']:>7} {r['session_s']:>9}")
    print(f"median wall / slowest answer: {result['wall_to_slowest_median']}; / sum: {result['wall_to_sum_median']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--participants", default="smollm2-135m,gemma3-270m,smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print_report(run(args.gateway, args.participants.split(","), args.runs, args.max_tokens))


if __name__ == "__main__":
    main()
