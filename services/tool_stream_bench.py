"""`arena bench --mode toolstream`: what reading a forced tool call costs per streamed token.

A forced call (`tool_choice` "required" or named) streams its arguments as they are generated;
the parser reads each token's text as it comes (`services.tools.ToolCallStream`). This feeds it
calls whose arguments grow to some thousands of tokens, a few characters a token as a model
writes them, and prints the parser's time per token at each length: flat when each piece is
read once, growing with the length when the text so far is read again at every token. No model
runs (the model's own time per token is `arena bench --mode service`).

Also `python -m services.tool_stream_bench [--tool-stream-tokens 1000,4000,16000]`.
"""

from __future__ import annotations

import argparse
import json
import time

from shared.catalogue import Catalogue
from services.tools import ToolCallStream, plan_tools

FUNCTION = {"type": "function", "function": {"name": "write_report", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}
WORDS = ("the ", "archive ", "held ", "letters, ", "maps ", "and ", "\\\"ledgers\\\" ", "{from} ", "[three] ")


def forced_call_pieces(tokens: int) -> list[str]:
    """The text of one forced call, cut as a model's tokens would cut it (a word or so each)."""
    head = ['<tool_call>', '\n', '{"name": "write_report", "arguments": ', '{"text": "']
    body = [WORDS[i % len(WORDS)] for i in range(tokens)]
    return head + body + ['"}', '}', '\n', '</tool_call>']


def time_stream(tokens: int) -> dict:
    """Feed one call of `tokens` argument tokens; the parser's seconds in all and per token."""
    pieces = forced_call_pieces(tokens)
    stream = ToolCallStream(plan_tools([FUNCTION], "required", False))
    started = time.perf_counter()
    for piece in pieces:
        stream.push(piece, final=False)
    stream.push("", final=True)
    seconds = time.perf_counter() - started
    arguments = stream.calls[0]["function"]["arguments"]
    assert json.loads(arguments)["text"], "the call must parse whole"
    return {"tokens": tokens, "seconds": round(seconds, 4), "us_per_token": round(seconds / len(pieces) * 1e6, 2)}


def run(lengths: list[int]) -> dict:
    return {"lengths": [time_stream(tokens) for tokens in lengths]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("toolstream (the forced tool-call parser, no model)")
    group.add_argument("--tool-stream-tokens", default="1000,4000,16000",
                       help="argument lengths of the calls, in tokens, separated by commas")


def measure(args: argparse.Namespace, catalogue: Catalogue | None = None) -> dict:
    result = run([int(n) for n in args.tool_stream_tokens.split(",") if n.strip()])
    print_report(result)
    return result


def print_report(result: dict) -> None:
    print("\nForced tool-call streaming: the parser's time per token")
    print(f"{'tokens':>8} {'total s':>9} {'us/token':>9}")
    for level in result["lengths"]:
        print(f"{level['tokens']:>8} {level['seconds']:>9} {level['us_per_token']:>9}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    measure(parser.parse_args(argv))


if __name__ == "__main__":
    main()
