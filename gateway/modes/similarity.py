"""How alike participants' answers are: the roundtable's convergence measure.

Token-set Jaccard similarity: each answer becomes the set of its lower-cased words (Unicode
word characters); the similarity of two answers is |A ∩ B| / |A ∪ B|, from 0 (no word in
common) to 1 (the same words). A round's figure is the mean over every pair of participants
who answered in that round. Chosen over TF-IDF cosine because it needs no corpus (with two
to six short answers, inverse document frequencies are mostly noise), is bounded, and is
easy to read: 0.4 means two answers share 40% of their vocabulary.
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def round_similarity(answers: Mapping[str, str]) -> tuple[float | None, dict[str, float]]:
    """Mean pairwise similarity of a round's answers, and each pair's ("p1|p2")."""
    pairs = {f"{a}|{b}": round(jaccard(answers[a], answers[b]), 4)
             for a, b in itertools.combinations(sorted(answers), 2)}
    if not pairs:
        return None, {}
    return round(sum(pairs.values()) / len(pairs), 4), pairs
