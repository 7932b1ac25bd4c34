"""The leaderboard: quality (ratings from votes) and speed (timings of the voted answers) together.

Which votes count: a vote is kept out of the ratings (and counted under `excluded`) when
- one side is not a contest: it failed, or gave no answer at all (stopped before its first
  token, or empty);
- either answer names a model or its maker (`identity.IdentityFlagger`): the voter was not blind;
- its client was excluded by an admin (a flood of votes from one client).

Each board (overall, and one per category of `categories.CATEGORIES`) has the plain
Bradley-Terry ratings and the style-controlled ones (`ratings.style_controlled`), each with
bootstrap intervals and ranks by upper bound: a model's rank is one more than the number of
models that are better beyond doubt (their lower bound above its upper bound), so models whose
intervals overlap share a rank.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Sequence

from gateway.arena.categories import CATEGORIES, OVERALL, categorize
from gateway.arena.identity import IdentityFlagger
from gateway.arena.ratings import (Outcome, bootstrap_intervals, bradley_terry, ranks_by_upper_bound, records,
                                   style_controlled, style_controlled_intervals, win_rate_matrix)
from gateway.arena.style import FEATURES, answer_features, normalised_difference

BOOTSTRAP_ROUNDS = 200
CONFIDENCE = 0.95
# Resampling a handful of battles gives intervals that look certain and are not (one battle
# resampled is always that battle): below this many battles a model gets no interval.
MIN_BATTLES_FOR_INTERVAL = 5
# A contest: both sides said something and neither failed. A stopped side with text counts
# (the voter judged what they saw).
CONTEST_STATUSES = ("done", "stopped")

METHOD = ("Bradley-Terry on the Elo scale (base 1000, 400 points = 10:1 odds), ties count half; "
          "95% bootstrap intervals; rank = 1 + models whose lower bound is above this model's upper bound")


@dataclass(frozen=True)
class RatedBattle:
    """One vote as the ratings see it."""

    outcome: Outcome
    style_diff: list[float]
    categories: tuple[str, ...]
    excluded: str | None            # why it is left out of the ratings, or None
    speed: tuple[tuple[str, str, float | None, float | None], ...]  # (model, status, ttft, tokens/s)


def user_turns(vote: Any) -> list[str]:
    turns = getattr(vote, "turns", None)
    return [t["user"] for t in turns] if turns else [vote.prompt]


def side_answers(vote: Any, side: str) -> list[str]:
    turns = getattr(vote, "turns", None)
    return [t[side] for t in turns] if turns else [getattr(vote, f"answer_{side}")]


def exclusion(vote: Any, flagger: IdentityFlagger | None, excluded_clients: Collection[str]) -> str | None:
    for side in ("a", "b"):
        if getattr(vote, f"status_{side}") not in CONTEST_STATUSES or not "".join(side_answers(vote, side)).strip():
            return "not_a_contest"
    if flagger is not None and flagger.words_in(*side_answers(vote, "a"), *side_answers(vote, "b")):
        return "identity"
    if getattr(vote, "client", None) in excluded_clients:
        return "excluded_client"
    return None


def rate_vote(vote: Any, flagger: IdentityFlagger | None = None,
              excluded_clients: Collection[str] = ()) -> RatedBattle:
    feats = {s: answer_features(side_answers(vote, s), getattr(vote, f"tokens_{s}")) for s in ("a", "b")}
    stored = getattr(vote, "categories", None)
    return RatedBattle(
        outcome=Outcome(vote.model_a, vote.model_b, vote.winner),
        style_diff=normalised_difference(feats["a"], feats["b"]),
        categories=tuple(stored) if stored is not None else tuple(categorize(user_turns(vote))),
        excluded=exclusion(vote, flagger, excluded_clients),
        speed=((vote.model_a, vote.status_a, vote.ttft_a, vote.tokens_per_second_a),
               (vote.model_b, vote.status_b, vote.ttft_b, vote.tokens_per_second_b)))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _intervals_or_points(intervals: Mapping[str, tuple[float, float]], ratings: Mapping[str, float],
                         enough: Mapping[str, bool]) -> dict[str, tuple[float, float]]:
    """Intervals for ranking: a model with too few battles for an interval ranks by its rating."""
    return {m: intervals[m] if enough[m] and m in intervals else (ratings[m], ratings[m]) for m in ratings}


def board_of(battles: Sequence[RatedBattle], display_names: Mapping[str, str], *, rounds: int,
             seed: int) -> dict[str, Any]:
    """One leaderboard (ratings, style-controlled ratings, records, speed, pairwise) of `battles`."""
    outcomes = [b.outcome for b in battles]
    diffs = [b.style_diff for b in battles]
    models = sorted({m for o in outcomes for m in (o.model_a, o.model_b)})
    ratings = bradley_terry(outcomes, models)
    intervals = bootstrap_intervals(outcomes, models, rounds=rounds, confidence=CONFIDENCE, seed=seed)
    styled = style_controlled(outcomes, diffs, FEATURES, models)
    styled_intervals = style_controlled_intervals(outcomes, diffs, FEATURES, models, rounds=rounds,
                                                  confidence=CONFIDENCE, seed=seed)
    record = records(outcomes, models)
    enough = {m: record[m].battles >= MIN_BATTLES_FOR_INTERVAL for m in models}
    rank = ranks_by_upper_bound(_intervals_or_points(intervals, ratings, enough))
    style_rank = ranks_by_upper_bound(_intervals_or_points(styled_intervals, styled.ratings, enough))

    ttfts: dict[str, list[float]] = {m: [] for m in models}
    rates: dict[str, list[float]] = {m: [] for m in models}
    for b in battles:
        for model, status, ttft, tps in b.speed:
            if status != "done":
                continue  # a stopped answer says nothing true about speed
            if ttft is not None:
                ttfts[model].append(ttft)
            if tps is not None:
                rates[model].append(tps)

    ranked = sorted(models, key=lambda m: (rank[m], -ratings[m], m))
    rows = []
    for m in ranked:
        r = record[m]
        low, high = intervals.get(m, (None, None)) if enough[m] else (None, None)
        s_low, s_high = styled_intervals.get(m, (None, None)) if enough[m] else (None, None)
        rows.append({
            "rank": rank[m], "model": m, "display_name": display_names.get(m, m),
            "rating": round(ratings[m], 1), "ci_low": _round(low, 1), "ci_high": _round(high, 1),
            "style_controlled": {"rank": style_rank[m], "rating": round(styled.ratings[m], 1),
                                 "ci_low": _round(s_low, 1), "ci_high": _round(s_high, 1)},
            "battles": r.battles, "wins": r.wins, "losses": r.losses, "ties": r.ties, "both_bad": r.both_bad,
            "win_rate": _round(r.win_rate, 4),
            "median_ttft_seconds": _round(_median(ttfts[m]), 4),
            "median_tokens_per_second": _round(_median(rates[m]), 2),
            "speed_samples": len(rates[m]),
        })
    matrix = win_rate_matrix(outcomes, ranked)
    meetings = [[sum(1 for o in outcomes if {o.model_a, o.model_b} == {a, b}) if a != b else 0 for b in ranked]
                for a in ranked]
    return {
        "battles": len(battles),
        "models": rows,
        "style_coefficients": {k: round(v, 4) for k, v in styled.coefficients.items()},
        "pairwise": {"models": ranked, "win_rate": [[_round(x, 4) for x in row] for row in matrix],
                     "battles": meetings},
    }


def build_leaderboard(votes: Iterable[Any], display_names: Mapping[str, str], *,
                      flagger: IdentityFlagger | None = None, excluded_clients: Collection[str] = (),
                      rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict[str, Any]:
    rated = [rate_vote(v, flagger, excluded_clients) for v in votes]
    counted = [b for b in rated if b.excluded is None]
    excluded: dict[str, int] = {}
    for b in rated:
        if b.excluded:
            excluded[b.excluded] = excluded.get(b.excluded, 0) + 1
    overall = board_of(counted, display_names, rounds=rounds, seed=seed)
    categories = {OVERALL: overall}
    for category in CATEGORIES:
        categories[category] = board_of([b for b in counted if category in b.categories], display_names,
                                        rounds=rounds, seed=seed)
    return {
        "generated_at": time.time(),
        "votes": len(rated),
        "counted": len(counted),
        "excluded": excluded,
        "method": METHOD,
        "confidence": CONFIDENCE,
        "bootstrap_rounds": rounds,
        "min_battles_for_interval": MIN_BATTLES_FOR_INTERVAL,
        "style_features": list(FEATURES),
        # The overall board at the top level, as before; every board under `categories`.
        "models": overall["models"],
        "pairwise": overall["pairwise"],
        "categories": categories,
    }
