"""Ratings from battle outcomes: Bradley-Terry on the Elo scale, bootstrap intervals, win rates.

Kept apart from serving: these functions take plain outcomes and return plain data, so they
can be checked against known cases and run offline on an export of the votes.

Bradley-Terry says model i beats model j with probability p_i / (p_i + p_j). We fit the
strengths p by Hunter's MM iteration (each step raises the likelihood; it converges for any
data once every model is tied to the rest), counting a tie as half a win for each side, as
FastChat's arena does. "Both bad" is a tie for the ratings. To keep a model that has only won
(or only lost) at a finite rating, each model also plays `prior_games` virtual ties against
a fixed reference of strength 1, i.e. rating `base_rating`: a weak pull towards the middle
that vanishes as real battles accumulate. Ratings are reported on the Elo scale,
``base_rating + scale * log10(p)``, so 400 points mean 10:1 odds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

# Outcomes as the vote stores them.
WINNER_A = "model_a"
WINNER_B = "model_b"
TIE = "tie"
BOTH_BAD = "both_bad"
OUTCOMES = (WINNER_A, WINNER_B, TIE, BOTH_BAD)

SCALE = 400.0
BASE_RATING = 1000.0


@dataclass(frozen=True)
class Outcome:
    """One voted battle: which model was A, which was B, and what the voter said."""

    model_a: str
    model_b: str
    winner: str

    def score_a(self) -> float:
        """A's share of the point: 1 for a win, 0 for a loss, 1/2 for a tie or both bad."""
        if self.winner == WINNER_A:
            return 1.0
        if self.winner == WINNER_B:
            return 0.0
        if self.winner in (TIE, BOTH_BAD):
            return 0.5
        raise ValueError(f"unknown outcome {self.winner!r}")


def _score_matrices(outcomes: Sequence[Outcome], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """wins[i, j] = points i took from j; games[i, j] = battles between i and j (symmetric)."""
    n = len(index)
    a = np.fromiter((index[o.model_a] for o in outcomes), dtype=np.int64, count=len(outcomes))
    b = np.fromiter((index[o.model_b] for o in outcomes), dtype=np.int64, count=len(outcomes))
    s = np.fromiter((o.score_a() for o in outcomes), dtype=np.float64, count=len(outcomes))
    return _matrices_from_arrays(a, b, s, n)


def _matrices_from_arrays(a: np.ndarray, b: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    wins = np.zeros((n, n))
    games = np.zeros((n, n))
    np.add.at(wins, (a, b), s)
    np.add.at(wins, (b, a), 1.0 - s)
    np.add.at(games, (a, b), 1.0)
    np.add.at(games, (b, a), 1.0)
    return wins, games


def _fit_strengths(wins: np.ndarray, games: np.ndarray, prior_games: float,
                   max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Hunter's MM iteration for Bradley-Terry strengths, with virtual ties against p = 1."""
    n = wins.shape[0]
    if n == 0:
        return np.zeros(0)
    total_wins = wins.sum(axis=1) + prior_games / 2.0
    if prior_games <= 0 and np.any(total_wins <= 0):
        raise ValueError("a model without any win has no finite rating; use prior_games > 0")
    p = np.ones(n)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1) + prior_games / (p + 1.0)
        new_p = total_wins / denom
        if prior_games <= 0:
            # Without the reference player the scale is free: fix the geometric mean at 1.
            new_p /= math.exp(np.log(new_p).mean())
        if np.max(np.abs(np.log(new_p) - np.log(p))) < tol:
            return new_p
        p = new_p
    return p


def bradley_terry(outcomes: Sequence[Outcome], models: Sequence[str] | None = None, *,
                  prior_games: float = 1.0, scale: float = SCALE,
                  base_rating: float = BASE_RATING) -> dict[str, float]:
    """Elo-scale Bradley-Terry ratings of `models` (default: every model in the outcomes)."""
    names = list(models) if models is not None else _models_of(outcomes)
    index = {name: i for i, name in enumerate(names)}
    wins, games = _score_matrices(outcomes, index)
    p = _fit_strengths(wins, games, prior_games)
    return {name: float(base_rating + scale * math.log10(p[i])) for name, i in index.items()}


def bootstrap_intervals(outcomes: Sequence[Outcome], models: Sequence[str] | None = None, *,
                        rounds: int = 200, confidence: float = 0.95, seed: int = 0,
                        prior_games: float = 1.0, scale: float = SCALE,
                        base_rating: float = BASE_RATING) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each rating: refit on `rounds` resamples of the battles."""
    names = list(models) if models is not None else _models_of(outcomes)
    index = {name: i for i, name in enumerate(names)}
    if not outcomes or not names:
        return {}
    a = np.array([index[o.model_a] for o in outcomes])
    b = np.array([index[o.model_b] for o in outcomes])
    s = np.array([o.score_a() for o in outcomes])
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(names)))
    for r in range(rounds):
        pick = rng.integers(0, len(outcomes), len(outcomes))
        # Newton's method on the logistic form (below): the same maximum as the MM fit, in a
        # handful of steps instead of hundreds.
        w = _logistic_fit(a[pick], b[pick], s[pick], np.zeros((len(pick), 0)), len(names), prior_games)
        samples[r] = base_rating + scale / math.log(10.0) * w
    tail = (1.0 - confidence) / 2.0 * 100.0
    low = np.percentile(samples, tail, axis=0)
    high = np.percentile(samples, 100.0 - tail, axis=0)
    return {name: (float(low[i]), float(high[i])) for name, i in index.items()}


def win_rate_matrix(outcomes: Iterable[Outcome], models: Sequence[str]) -> list[list[float | None]]:
    """matrix[i][j] = share of points model i took in its battles against model j (ties = 1/2);
    None where the two never met."""
    index = {name: i for i, name in enumerate(models)}
    wins, games = _score_matrices(list(outcomes), index)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = wins / games
    return [[None if games[i, j] == 0 else float(rates[i, j]) for j in range(len(models))]
            for i in range(len(models))]


@dataclass(frozen=True)
class Record:
    battles: int
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def win_rate(self) -> float | None:
        """Points per battle: (wins + ties/2 + both-bad/2) / battles."""
        if self.battles == 0:
            return None
        return (self.wins + 0.5 * (self.ties + self.both_bad)) / self.battles


def records(outcomes: Iterable[Outcome], models: Sequence[str]) -> dict[str, Record]:
    counts = {m: [0, 0, 0, 0, 0] for m in models}  # battles, wins, losses, ties, both_bad
    for o in outcomes:
        for me, side in ((o.model_a, WINNER_A), (o.model_b, WINNER_B)):
            if me not in counts:
                continue
            c = counts[me]
            c[0] += 1
            if o.winner == side:
                c[1] += 1
            elif o.winner in (WINNER_A, WINNER_B):
                c[2] += 1
            elif o.winner == TIE:
                c[3] += 1
            else:
                c[4] += 1
    return {m: Record(*c) for m, c in counts.items()}


def _models_of(outcomes: Iterable[Outcome]) -> list[str]:
    return sorted({m for o in outcomes for m in (o.model_a, o.model_b)})


# -- style control ------------------------------------------------------------------------
#
# The same Bradley-Terry model written as a logistic regression, which takes covariates:
# P(A beats B) = sigmoid(beta_A - beta_B + gamma . style_diff). The style coefficients gamma
# soak up what length and formatting explain; beta is then the rating at equal style. A tie
# is a target of 1/2. The prior is the one of the MM fit above, written as rows: each model
# plays `prior_games` virtual ties against the reference (beta = 0, i.e. `base_rating`), so
# without covariates this fit has the same maximum as `bradley_terry`. Fitted by Newton's
# method (convex, a column per model plus one per feature): a few steps where the MM
# iteration takes hundreds, which is what makes the bootstrap affordable.


@dataclass(frozen=True)
class StyleFit:
    ratings: dict[str, float]
    coefficients: dict[str, float]   # per style feature, in log-odds per standard deviation


def _standardise(features: np.ndarray) -> np.ndarray:
    if features.size == 0:
        return features
    std = features.std(axis=0)
    std[std == 0] = 1.0
    return (features - features.mean(axis=0)) / std


def _logistic_fit(a: np.ndarray, b: np.ndarray, s: np.ndarray, style: np.ndarray, n: int,
                  prior_games: float, max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    k = style.shape[1] if style.ndim == 2 else 0
    m = len(s)
    x = np.zeros((m + n, n + k))
    rows = np.arange(m)
    x[rows, a] += 1.0
    x[rows, b] -= 1.0
    if k:
        x[:m, n:] = style
    x[m + np.arange(n), np.arange(n)] = 1.0         # the virtual ties against the reference
    target = np.concatenate([s, np.full(n, 0.5)])
    weight = np.concatenate([np.ones(m), np.full(n, prior_games)])
    ridge = np.concatenate([np.zeros(n), np.full(k, 1e-6)])  # numerical safety for a constant feature
    w = np.zeros(n + k)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (weight * (p - target)) + ridge * w
        hess = (x * (weight * p * (1.0 - p))[:, None]).T @ x + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < tol:
            break
    return w


def style_controlled(outcomes: Sequence[Outcome], style_diffs: Sequence[Sequence[float]],
                     feature_names: Sequence[str], models: Sequence[str] | None = None, *,
                     prior_games: float = 1.0, scale: float = SCALE, base_rating: float = BASE_RATING) -> StyleFit:
    """Ratings at equal style. `style_diffs[i]` are battle i's normalised A-minus-B feature
    differences; an empty `feature_names` gives the plain logistic Bradley-Terry fit."""
    names = list(models) if models is not None else _models_of(outcomes)
    index = {name: i for i, name in enumerate(names)}
    if not outcomes:
        return StyleFit({n: base_rating for n in names}, {f: 0.0 for f in feature_names})
    a = np.array([index[o.model_a] for o in outcomes])
    b = np.array([index[o.model_b] for o in outcomes])
    s = np.array([o.score_a() for o in outcomes])
    style = _standardise(np.asarray(style_diffs, dtype=np.float64).reshape(len(outcomes), len(feature_names)))
    w = _logistic_fit(a, b, s, style, len(names), prior_games)
    to_elo = scale / math.log(10.0)
    return StyleFit({name: float(base_rating + to_elo * w[i]) for name, i in index.items()},
                    {f: float(w[len(names) + j]) for j, f in enumerate(feature_names)})


def style_controlled_intervals(outcomes: Sequence[Outcome], style_diffs: Sequence[Sequence[float]],
                               feature_names: Sequence[str], models: Sequence[str] | None = None, *,
                               rounds: int = 200, confidence: float = 0.95, seed: int = 0,
                               prior_games: float = 1.0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the style-controlled ratings."""
    names = list(models) if models is not None else _models_of(outcomes)
    if not outcomes or not names:
        return {}
    rng = np.random.default_rng(seed)
    diffs = np.asarray(style_diffs, dtype=np.float64).reshape(len(outcomes), len(feature_names))
    samples = np.empty((rounds, len(names)))
    for r in range(rounds):
        pick = rng.integers(0, len(outcomes), len(outcomes))
        fit = style_controlled([outcomes[i] for i in pick], diffs[pick], feature_names, names, prior_games=prior_games)
        samples[r] = [fit.ratings[n] for n in names]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low = np.percentile(samples, tail, axis=0)
    high = np.percentile(samples, 100.0 - tail, axis=0)
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(names)}


def ranks_by_upper_bound(intervals: dict[str, tuple[float, float]]) -> dict[str, int]:
    """FastChat's ranking: a model's rank is 1 + the number of models whose lower bound is above
    its upper bound. Models whose intervals overlap share a rank."""
    return {m: 1 + sum(1 for o, (low, _) in intervals.items() if o != m and low > high)
            for m, (_, high) in intervals.items()}
