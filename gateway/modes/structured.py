"""What the modes ask models for as JSON, and how they read the answers robustly.

Each question goes out with a JSON schema as `response_format` (the model service turns it into
a grammar, so even a 135M model produces JSON of that shape). The answer is still validated
here: output that fails (a foreign endpoint that ignores the schema, a cut-off answer, plain
garbage) falls back to a sane default and says so, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import BaseModel, Field, ValidationError


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def _json_object(text: str) -> Any:
    """The JSON object in `text`: the whole text, or its first {...} (models wrap JSON in prose).
    Nesting deeper than the parser's recursion limit is unreadable, like any other garbage."""
    text = text.strip()
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start:end + 1])
        except (ValueError, RecursionError):
            return None
    return None


# -- the discussion's plan -----------------------------------------------------------------

def plan_schema(participant_ids: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "domains": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
            "expertise": {"type": "object",
                          "properties": {pid: {"type": "integer"} for pid in participant_ids},
                          "required": list(participant_ids), "additionalProperties": False},
        },
        "required": ["domains", "expertise"],
        "additionalProperties": False,
    }


class _PlanAnswer(BaseModel):
    domains: list[str] = Field(min_length=1, max_length=3)
    expertise: dict[str, float]


@dataclass
class Plan:
    domains: list[str]
    weights: dict[str, float]          # participant id -> share, summing to 1
    source: str                        # "model" or "fallback"
    note: str = ""

    def order(self, participant_ids: Sequence[str]) -> list[str]:
        """Most expert first; ties keep the participants' order."""
        return sorted(participant_ids, key=lambda pid: (-self.weights.get(pid, 0.0), participant_ids.index(pid)))


def equal_plan(participant_ids: Sequence[str], note: str) -> Plan:
    share = 1.0 / len(participant_ids)
    return Plan(domains=["general"], weights={pid: share for pid in participant_ids}, source="fallback", note=note)


def parse_plan(text: str, participant_ids: Sequence[str]) -> Plan:
    """The orchestrator's plan, or equal weights when its answer is not a valid plan."""
    data = _json_object(text)
    try:
        answer = _PlanAnswer.model_validate(data)
    except ValidationError:
        return equal_plan(participant_ids, "the orchestrator's answer was not a valid plan; equal weights")
    raw = {pid: max(0.0, min(10.0, float(answer.expertise.get(pid, 0.0)))) for pid in participant_ids}
    total = sum(raw.values())
    if total <= 0:
        return equal_plan(participant_ids, "the orchestrator gave nobody any expertise; equal weights")
    domains = [d.strip()[:40] for d in answer.domains if d.strip()][:3] or ["general"]
    return Plan(domains=domains, weights={pid: round(v / total, 4) for pid, v in raw.items()}, source="model")


# -- the discussion's judgement after each round -------------------------------------------

JUDGEMENT_SCHEMA = {
    "type": "object",
    "properties": {"complete": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["complete", "reason"],
    "additionalProperties": False,
}


class _Judgement(BaseModel):
    complete: bool
    reason: str = ""


@dataclass
class Judgement:
    complete: bool
    reason: str
    source: str


def parse_judgement(text: str) -> Judgement:
    """Is the answer complete? When the judge's answer is unreadable: not yet (keep going)."""
    data = _json_object(text)
    try:
        answer = _Judgement.model_validate(data, strict=True)
    except ValidationError:
        return Judgement(False, "the judge's answer was not valid; the discussion goes on", "fallback")
    return Judgement(answer.complete, answer.reason.strip()[:300], "model")


# -- council rankings ------------------------------------------------------------------------

def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def ranking_schema(candidates: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": list(candidates)},
                                   "minItems": len(candidates), "maxItems": len(candidates)}},
        "required": ["ranking"],
        "additionalProperties": False,
    }


_LETTER_REF = re.compile(r"\b(?:response|answer|option)\s*([A-Z])\b|\b([A-Z])\b(?=\s*(?:[>,;.)\]:]|$|\n|-))",
                         re.IGNORECASE)


@dataclass
class ParsedRanking:
    order: list[str]     # letters, best first; may be partial
    source: str          # "json", "text" or "none"


def parse_ranking(text: str, candidates: Sequence[str]) -> ParsedRanking:
    """Letters best first: from JSON when the model managed it, else from the text.

    The text parser takes letters in the order they are first named ("Response B", or a lone
    capital letter followed by punctuation such as "B > A > C" or "1. C"). Unknown letters and
    repeats are dropped. A ranking that names all candidates but one is completed with it.
    """
    wanted = [c.upper() for c in candidates]
    data = _json_object(text)
    if isinstance(data, dict) and isinstance(data.get("ranking"), list):
        order = _dedupe([str(x).strip().upper().removeprefix("RESPONSE ").strip() for x in data["ranking"]], wanted)
        if order:
            return ParsedRanking(_complete(order, wanted), "json")
    found = []
    for match in _LETTER_REF.finditer(text):
        letter = (match.group(1) or match.group(2) or "").upper()
        if match.group(2) and not match.group(2).isupper():
            continue  # a lone lower-case "a" is an article, not a response
        found.append(letter)
    order = _dedupe(found, wanted)
    if order:
        return ParsedRanking(_complete(order, wanted), "text")
    return ParsedRanking([], "none")


def _dedupe(items: list[str], wanted: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item in wanted and item not in out:
            out.append(item)
    return out


def _complete(order: list[str], wanted: list[str]) -> list[str]:
    missing = [c for c in wanted if c not in order]
    return order + missing if len(missing) == 1 else order


@dataclass
class Standing:
    participant: str
    mean_rank: float | None      # 1 is best; None when nobody ranked it
    rankers: int                 # how many rankers placed it
    first_places: int            # how many rankers put it first
    ranks: list[int] = field(default_factory=list)


def aggregate(rankings: dict[str, list[str]], participants: Sequence[str]) -> list[Standing]:
    """Mean rank per participant over the rankings that placed it, best first.

    `rankings` maps a ranker to participant ids, best first (a ranker never ranks itself).
    Ties on mean rank are broken by first places, then by the participants' order.
    """
    standings = {pid: Standing(pid, None, 0, 0) for pid in participants}
    for order in rankings.values():
        for position, pid in enumerate(order, start=1):
            if pid in standings:
                standings[pid].ranks.append(position)
                standings[pid].first_places += position == 1
    for standing in standings.values():
        standing.rankers = len(standing.ranks)
        if standing.ranks:
            standing.mean_rank = round(sum(standing.ranks) / len(standing.ranks), 3)
    return sorted(standings.values(), key=lambda s: (s.mean_rank is None, s.mean_rank or 0.0, -s.first_places,
                                                    list(participants).index(s.participant)))
