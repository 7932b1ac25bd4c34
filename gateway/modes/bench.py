"""How parallel a council really is: its answer phase against its slowest and summed answers.

    python -m gateway.modes.bench --gateway http://127.0.0.1:8080 [--runs 3] [--max-tokens 64]

Runs councils of three through a running gateway and prints, per run, the answer phase's wall
time (first answer started to last answer ended, from the stream's own `t` stamps), the
slowest answer's time and the sum of the three. Parallel answers make the wall time close to
the slowest answer, not the sum. Answers of a model share its instance's CPU, so on a small
machine each answer is slower in a council than alone: the ratio to the slowest answer is
the figure that says whether the gateway serialises anything.
"""

from __future__ import annotations

import argparse
import json
import statistics

import httpx


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
    return {"wall": wall, "slowest": max(e["seconds"] for e in ends), "sum": sum(e["seconds"] for e in ends),
            "session": events[-1]["seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--participants", default="smollm2-135m,gemma3-270m,smollm2-135m")
    parser.add_argument("--question", default="Explain in two sentences why the sky is blue.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [council_once(args.gateway, args.participants.split(","), args.question, args.max_tokens)
            for _ in range(args.runs)]
    for i, r in enumerate(rows, 1):
        print(f"run {i}: answer phase {r['wall']:.2f} s, slowest answer {r['slowest']:.2f} s, "
              f"sum {r['sum']:.2f} s, whole session {r['session']:.2f} s")
    print(f"median answer phase / slowest answer: {statistics.median(r['wall'] / r['slowest'] for r in rows):.2f}; "
          f"/ sum: {statistics.median(r['wall'] / r['sum'] for r in rows):.2f}")


if __name__ == "__main__":
    main()
