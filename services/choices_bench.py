"""What `n` choices cost against one: `python -m services.choices_bench URL [--n 4]`.

Sends the same kind of request (a prompt of about 500 tokens, a few generated tokens) with
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
    return {"prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "n": n, "n1_seconds": round(one, 3),
            f"n{n}_seconds": round(many, 3), "ratio": round(many / one, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the model service, e.g. http://127.0.0.1:8101")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    print(run(args.url.rstrip("/"), args.model, args.n, args.repetitions, args.max_tokens))


if __name__ == "__main__":
    main()
