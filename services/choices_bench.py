"""`arena bench --mode choices`: what `n` choices cost against one.

Starts a model service (or, as `python -m services.choices_bench URL [--n 4]`, uses a running
one) and sends the same kind of request (a prompt of about 500 tokens, a few generated tokens) with
`n` = 1 and with `n` = N to a running model service, each repetition with a prompt of its own so
no prefix is reused, and prints the median wall time of each and their ratio. With the prompt
prefilled once and copied, the ratio stays far below N: only the decode of the extra rows and
the KV copies are added.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from services.bench_support import running_service
from shared.catalogue import Catalogue

FILLER = ("The archive held letters, maps and ledgers from three centuries of trade along the coast, "
          "and each box was labelled in a different hand. ")


def prompt(repetition: int, sentences: int = 20) -> str:
    """About 25 tokens a sentence: 20 sentences make a prompt of about 500 tokens."""
    return f"Record {repetition}. " + FILLER * sentences + "Summarise the archive in one sentence."


def timed(client: httpx.Client, url: str, model: str, text: str, n: int, max_tokens: int) -> tuple[float, dict]:
    body = {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": 0.8, "seed": 1, "n": n,
            "include_perf": True}
    started = time.perf_counter()
    response = client.post(url + "/v1/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def run(url: str, model: str, n: int, repetitions: int, max_tokens: int) -> dict:
    with httpx.Client(timeout=300) as client:
        timed(client, url, model, prompt(-1), 1, 1)  # warm-up
        singles, multis, prompt_tokens = [], [], 0
        for rep in range(repetitions):
            seconds, body = timed(client, url, model, prompt(2 * rep), 1, max_tokens)
            singles.append(seconds)
            prompt_tokens = body["usage"]["prompt_tokens"]
            seconds, body = timed(client, url, model, prompt(2 * rep + 1), n, max_tokens)
            multis.append(seconds)
    one, many = statistics.median(singles), statistics.median(multis)
    return {"model": model, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "n": n,
            "repetitions": repetitions, "n1_seconds": round(one, 3),
            f"n{n}_seconds": round(many, 3), "ratio": round(many / one, 2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("choices (n > 1 against n = 1 on one model service)")
    group.add_argument("--choices-model", default="smollm2-135m", help="catalogue key")
    group.add_argument("--choices-n", type=int, default=4, help="choices of the n > 1 requests")
    group.add_argument("--choices-repetitions", type=int, default=3, help="requests of each kind (median)")
    group.add_argument("--choices-tokens", type=int, default=8, help="max_tokens of each choice")


def measure(args: argparse.Namespace, catalogue: Catalogue) -> dict:
    """`arena bench --mode choices`: start the model, run it and print the report."""
    slots = max(args.choices_n, catalogue.model(args.choices_model).parallel)
    with running_service(catalogue, args.choices_model, f"choices-{args.choices_model}", "--parallel",
                         str(slots)) as url:
        result = run(url, args.choices_model, args.choices_n, args.choices_repetitions, args.choices_tokens)
    print_report(result)
    return result


def print_report(result: dict) -> None:
    n = result["n"]
    print(f"\nChoices: {result['model']}, a prompt of {result['prompt_tokens']} tokens, "
          f"max_tokens {result['max_tokens']}, median of {result['repetitions']}")
    print(f"{'n':>3} {'wall s':>8} {'x n=1':>6}")
    print(f"{1:>3} {result['n1_seconds']:>8} {1.0:>6}")
    print(f"{n:>3} {result[f'n{n}_seconds']:>8} {result['ratio']:>6}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the model service, e.g. http://127.0.0.1:8101")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    print_report(run(args.url.rstrip("/"), args.model, args.n, args.repetitions, args.max_tokens))


if __name__ == "__main__":
    main()
