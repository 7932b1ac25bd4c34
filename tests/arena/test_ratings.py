"""The ratings math against cases whose answer is known in closed form."""

import math

import pytest

from gateway.arena.ratings import (Outcome, bootstrap_intervals, bradley_terry, records, win_rate_matrix)


def games(a: str, b: str, wins_a: int, wins_b: int, ties: int = 0) -> list[Outcome]:
    return ([Outcome(a, b, "model_a")] * wins_a + [Outcome(a, b, "model_b")] * wins_b
            + [Outcome(a, b, "tie")] * ties)


def test_two_models_recover_the_odds_exactly():
    # A wins 3 of 4: the maximum-likelihood odds are 3:1, i.e. 400*log10(3) Elo points apart.
    r = bradley_terry(games("a", "b", 300, 100), prior_games=0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (r["a"] + r["b"]) / 2 == pytest.approx(1000, abs=1e-6)


def test_three_models_with_consistent_counts_recover_their_strengths():
    # Strengths 4:2:1 give win probabilities 2/3 (a-b), 4/5 (a-c), 2/3 (b-c); counts in exactly
    # those proportions have the true strengths as their maximum-likelihood fit.
    data = games("a", "b", 200, 100) + games("a", "c", 240, 60) + games("b", "c", 200, 100)
    r = bradley_terry(data, prior_games=0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(2), abs=1e-5)
    assert r["b"] - r["c"] == pytest.approx(400 * math.log10(2), abs=1e-5)
    assert r["a"] - r["c"] == pytest.approx(400 * math.log10(4), abs=1e-5)


def test_side_does_not_matter_and_ties_count_half():
    as_a = bradley_terry(games("x", "y", 30, 10), prior_games=0)
    as_b = bradley_terry(games("y", "x", 10, 30), prior_games=0)
    assert as_a["x"] == pytest.approx(as_b["x"], abs=1e-6)
    # 20 wins + 20 ties against 20 losses is 30 points to 10 too.
    with_ties = bradley_terry(games("x", "y", 20, 0, ties=20) + games("x", "y", 0, 0), prior_games=0)
    assert with_ties["x"] == pytest.approx(1000 + 200 * math.log10(3), abs=1e-6)
    both_bad = bradley_terry([Outcome("x", "y", "both_bad")] * 5 + [Outcome("x", "y", "tie")] * 5)
    assert both_bad["x"] == pytest.approx(both_bad["y"]) == pytest.approx(1000)


def test_an_undefeated_model_gets_a_finite_rating_that_grows_with_evidence():
    few = bradley_terry(games("a", "b", 3, 0))
    many = bradley_terry(games("a", "b", 30, 0))
    assert math.isfinite(few["a"]) and few["a"] > few["b"]
    assert many["a"] - many["b"] > few["a"] - few["b"]
    with pytest.raises(ValueError):
        bradley_terry(games("a", "b", 3, 0), prior_games=0)


def test_the_prior_shrinks_little_once_there_are_many_battles():
    exact = 400 * math.log10(3)
    r = bradley_terry(games("a", "b", 300, 100), prior_games=1.0)
    assert exact - 2 < r["a"] - r["b"] < exact


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_data():
    small = games("a", "b", 15, 5)
    large = games("a", "b", 300, 100)
    point = bradley_terry(small)
    ci_small = bootstrap_intervals(small, rounds=300, seed=1)
    ci_large = bootstrap_intervals(large, rounds=300, seed=1)
    for m in ("a", "b"):
        assert ci_small[m][0] <= point[m] <= ci_small[m][1]
        assert ci_large[m][1] - ci_large[m][0] < ci_small[m][1] - ci_small[m][0]
    # With 400 battles at 3:1 the 95% interval of the gap is about +-40 points: a is above b.
    assert ci_large["a"][0] > ci_large["b"][1]
    # Same seed, same answer.
    assert bootstrap_intervals(small, rounds=50, seed=7) == bootstrap_intervals(small, rounds=50, seed=7)


def test_win_rate_matrix_and_records():
    data = games("a", "b", 3, 1) + games("b", "c", 1, 1, ties=2)
    m = win_rate_matrix(data, ["a", "b", "c"])
    assert m[0][1] == pytest.approx(0.75) and m[1][0] == pytest.approx(0.25)
    assert m[1][2] == pytest.approx(0.5) and m[2][1] == pytest.approx(0.5)
    assert m[0][2] is None and m[2][0] is None and m[0][0] is None
    rec = records(data + [Outcome("c", "a", "both_bad")], ["a", "b", "c"])
    assert (rec["a"].battles, rec["a"].wins, rec["a"].losses, rec["a"].both_bad) == (5, 3, 1, 1)
    assert rec["a"].win_rate == pytest.approx(3.5 / 5)
    assert (rec["b"].battles, rec["b"].wins, rec["b"].losses, rec["b"].ties) == (8, 2, 4, 2)
    with pytest.raises(ValueError):
        Outcome("a", "b", "draw").score_a()
