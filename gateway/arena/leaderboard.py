"""The leaderboard: quality (ratings from votes) and speed (timings of the voted answers) together."""

from __future__ import annotations

import statistics
import time
from typing import Any, Iterable, Mapping

from gateway.arena.ratings import Outcome, bootstrap_intervals, bradley_terry, records, win_rate_matrix
from gateway.arena.votes import Vote

BOOTSTRAP_ROUNDS = 200
CONFIDENCE = 0.95
# Resampling a handful of battles gives intervals that look certain and are not (one battle
# resampled is always that battle): below this many battles a model gets no interval.
MIN_BATTLES_FOR_INTERVAL = 5


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def build_leaderboard(votes: Iterable[Vote], display_names: Mapping[str, str], *,
                      rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict[str, Any]:
    votes = list(votes)
    outcomes = [Outcome(v.model_a, v.model_b, v.winner) for v in votes]
    models = sorted({m for o in outcomes for m in (o.model_a, o.model_b)})
    ratings = bradley_terry(outcomes, models)
    intervals = bootstrap_intervals(outcomes, models, rounds=rounds, confidence=CONFIDENCE, seed=seed)
    record = records(outcomes, models)

    ttfts: dict[str, list[float]] = {m: [] for m in models}
    rates: dict[str, list[float]] = {m: [] for m in models}
    for v in votes:
        for model, status, ttft, tps in ((v.model_a, v.status_a, v.ttft_a, v.tokens_per_second_a),
                                         (v.model_b, v.status_b, v.ttft_b, v.tokens_per_second_b)):
            if status != "done":
                continue  # a stopped or failed answer says nothing true about speed
            if ttft is not None:
                ttfts[model].append(ttft)
            if tps is not None:
                rates[model].append(tps)

    ranked = sorted(models, key=lambda m: (-ratings[m], m))
    rows = []
    for rank, m in enumerate(ranked, start=1):
        r = record[m]
        low, high = intervals.get(m, (None, None)) if r.battles >= MIN_BATTLES_FOR_INTERVAL else (None, None)
        rows.append({
            "rank": rank, "model": m, "display_name": display_names.get(m, m),
            "rating": round(ratings[m], 1),
            "ci_low": None if low is None else round(low, 1), "ci_high": None if high is None else round(high, 1),
            "battles": r.battles, "wins": r.wins, "losses": r.losses, "ties": r.ties, "both_bad": r.both_bad,
            "win_rate": None if r.win_rate is None else round(r.win_rate, 4),
            "median_ttft_seconds": _round(_median(ttfts[m]), 4),
            "median_tokens_per_second": _round(_median(rates[m]), 2),
            "speed_samples": len(rates[m]),
        })
    matrix = win_rate_matrix(outcomes, ranked)
    meetings = [[sum(1 for o in outcomes if {o.model_a, o.model_b} == {a, b}) if a != b else 0 for b in ranked]
                for a in ranked]
    return {
        "generated_at": time.time(),
        "votes": len(votes),
        "method": "bradley-terry (MM), Elo scale (base 1000, 400 points = 10:1 odds), ties count half",
        "confidence": CONFIDENCE,
        "bootstrap_rounds": rounds,
        "min_battles_for_interval": MIN_BATTLES_FOR_INTERVAL,
        "models": rows,
        "pairwise": {"models": ranked, "win_rate": [[_round(x, 4) for x in row] for row in matrix],
                     "battles": meetings},
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
