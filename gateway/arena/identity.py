"""Answers that give away their model: "As SmolLM, I...", "I am Gemma".

A vote on a battle where either answer names a model (or its maker) is kept but left out of
the ratings, as FastChat does with its identity words: the voter knew who was who. The words
are the `identity_words` of every model's profile in the catalogue, matched as whole words,
case-insensitively. Any model's words count, not only the two in the battle: an answer that
claims to be another model's is as unblind.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from shared.catalogue import Catalogue


class IdentityFlagger:
    def __init__(self, words_by_model: Mapping[str, Iterable[str]]) -> None:
        words = sorted({w.strip() for ws in words_by_model.values() for w in ws if w and w.strip()},
                       key=len, reverse=True)
        # \b only works next to word characters; a word may start or end with something else.
        parts = [(r"\b" if w[0].isalnum() else "") + re.escape(w) + (r"\b" if w[-1].isalnum() else "")
                 for w in words]
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue) -> "IdentityFlagger":
        return cls({key: spec.profile.identity_words for key, spec in catalogue.models.items()})

    def words_in(self, *texts: str) -> list[str]:
        """The identity words found in `texts`, as written there, each once."""
        if self._pattern is None:
            return []
        found: dict[str, str] = {}
        for text in texts:
            for match in self._pattern.finditer(text or ""):
                found.setdefault(match.group(0).lower(), match.group(0))
        return list(found.values())
