"""Style features of an answer, for style control (FastChat's method).

Voters tend to prefer longer and more formatted answers whatever their substance. Style control
adds, for every battle, the difference between the two sides in each feature below as
covariates of the Bradley-Terry fit, so that a model's rating says how often it wins at equal
length and formatting. A feature's difference is normalised as (a - b) / (a + b) (0 when both
are 0), then scaled to unit standard deviation over the battles.
"""

from __future__ import annotations

import re
from typing import Sequence

FEATURES = ("answer_tokens", "headers", "list_items", "bold")

_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
_WORD = re.compile(r"\S+")


def answer_features(answers: Sequence[str], tokens: int | None = None) -> dict[str, float]:
    """Features of one side over all its turns. `tokens` is the side's generated token count
    (summed over turns); without it, words count instead."""
    text = "\n".join(answers)
    return {
        "answer_tokens": float(tokens if tokens is not None else len(_WORD.findall(text))),
        "headers": float(len(_HEADER.findall(text))),
        "list_items": float(len(_LIST_ITEM.findall(text))),
        "bold": float(len(_BOLD.findall(text))),
    }


def normalised_difference(a: dict[str, float], b: dict[str, float]) -> list[float]:
    out = []
    for name in FEATURES:
        total = a[name] + b[name]
        out.append(0.0 if total == 0 else (a[name] - b[name]) / total)
    return out
