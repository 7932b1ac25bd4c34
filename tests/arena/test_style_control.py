"""Style control, ranks by upper bound, categories and identity words: pure unit tests."""

from __future__ import annotations

import random

from gateway.arena.categories import categorize
from gateway.arena.identity import IdentityFlagger
from gateway.arena.ratings import (WINNER_A, WINNER_B, Outcome, bradley_terry, ranks_by_upper_bound,
                                   style_controlled)
from gateway.arena.style import FEATURES, answer_features, normalised_difference


def synthetic_length_votes(n: int = 400, seed: int = 1):
    """'verbose' writes the longer answer in 80% of battles, 'terse' in 20%; the longer answer
    always wins. Quality apart from length is the same."""
    rng = random.Random(seed)
    outcomes, diffs = [], []
    for i in range(n):
        verbose_long = rng.random() < 0.8
        long_words, short_words = rng.randint(150, 300), rng.randint(20, 60)
        words = {"verbose": long_words if verbose_long else short_words,
                 "terse": short_words if verbose_long else long_words}
        a, b = ("verbose", "terse") if i % 2 else ("terse", "verbose")
        fa = answer_features(["w " * words[a]])
        fb = answer_features(["w " * words[b]])
        outcomes.append(Outcome(a, b, WINNER_A if words[a] > words[b] else WINNER_B))
        diffs.append(normalised_difference(fa, fb))
    return outcomes, diffs


def test_style_control_takes_away_the_advantage_of_length():
    outcomes, diffs = synthetic_length_votes()
    plain = style_controlled(outcomes, [[] for _ in outcomes], [])
    controlled = style_controlled(outcomes, diffs, FEATURES)
    raw_gap = plain.ratings["verbose"] - plain.ratings["terse"]
    controlled_gap = controlled.ratings["verbose"] - controlled.ratings["terse"]
    assert raw_gap > 150  # winning 80% of battles is worth about 240 points
    assert controlled.ratings["verbose"] < plain.ratings["verbose"]
    assert abs(controlled_gap) < raw_gap / 4
    assert controlled.coefficients["answer_tokens"] > 1.0  # length is what wins
    # Without covariates the logistic fit has the maximum of the MM fit of the plain leaderboard.
    mm = bradley_terry(outcomes)
    assert abs(mm["verbose"] - plain.ratings["verbose"]) < 0.5 and abs(mm["terse"] - plain.ratings["terse"]) < 0.5


def test_style_control_leaves_a_real_difference_alone():
    # Same lengths on both sides: style explains nothing, the ratings barely move.
    rng = random.Random(2)
    outcomes = [Outcome("good", "bad", WINNER_A if rng.random() < 0.75 else WINNER_B) for _ in range(300)]
    diffs = [normalised_difference(answer_features(["a b c"]), answer_features(["d e f"])) for _ in outcomes]
    plain = style_controlled(outcomes, [[] for _ in outcomes], [])
    controlled = style_controlled(outcomes, diffs, FEATURES)
    assert abs(controlled.ratings["good"] - plain.ratings["good"]) < 1


def test_markdown_features_are_counted():
    f = answer_features(["# Title\n\n- one\n- two\n1. three\n\nSome **bold** and __more__."], tokens=42)
    assert f == {"answer_tokens": 42.0, "headers": 1.0, "list_items": 3.0, "bold": 2.0}
    assert normalised_difference(f, f) == [0.0] * len(FEATURES)


def test_overlapping_intervals_share_a_rank():
    ranks = ranks_by_upper_bound({"a": (1100, 1200), "b": (1050, 1150), "c": (900, 1000), "d": (700, 1060)})
    # a and b overlap; c is beaten beyond doubt by a and b; d overlaps b and c but not a's lower bound.
    assert ranks == {"a": 1, "b": 1, "c": 3, "d": 2}


def test_categories_by_rule():
    assert categorize(["Write a python function that reverses a list"]) == ["code"]
    assert categorize(["What is 12 * 7?"]) == ["math"]
    assert categorize(["Write a short poem about the sea"]) == ["creative_writing"]
    assert categorize(["What is the capital of France?"]) == []
    assert categorize(["x " * 600]) == ["long_prompt"]
    assert categorize(["Hello", "Tell me more"]) == ["multi_turn"]


def test_identity_words_match_whole_words_of_any_model():
    flagger = IdentityFlagger({"smollm2-135m": ["SmolLM", "Hugging Face"], "gemma3-270m": ["Gemma"]})
    assert flagger.words_in("As SmolLM, I think so.") == ["SmolLM"]
    assert flagger.words_in("I am gemma, made by", "hugging face") == ["gemma", "hugging face"]
    assert flagger.words_in("Gemmas are gemstones; smolLMish") == []
    assert IdentityFlagger({}).words_in("SmolLM") == []
