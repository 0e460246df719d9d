"""Simulated labelers: their decisions, and a crowd whose agreement is calibrated to a target.

Pure Python: no database, no server.
"""

from __future__ import annotations

import math
import random
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pytest

from training.demo import crowd as sim
from training.demo.families import gold_response, judge, sample_prompts


def _labeler(noise: float = 0.0, skill: float = 1.0, tie_eps: float = 0.02):
    return sim.SimulatedLabeler(
        name="sim", noise=noise, skill=skill, skip_rate=0.0, tie_eps=tie_eps
    )


@pytest.fixture(scope="module")
def held_out_rankings():
    """Rankings the crowd never saw while it was calibrated (a different seed)."""
    return sim.synthetic_rankings(300, k=4, seed=1234)


@pytest.mark.parametrize("target", [0.6, 0.73, 0.9])
def test_a_crowds_measured_agreement_is_within_five_points_of_its_target(target, held_out_rankings):
    crowd = sim.make_crowd(5, agreement=target, seed=7)
    rng = random.Random(11)
    ranks = {
        labeler.name: {
            item: [entry.rank for entry in labeler.rank(prompt, completions, rng)]
            for item, (prompt, completions) in enumerate(held_out_rankings)
        }
        for labeler in crowd
    }
    measured = sim.measured_agreement(ranks)
    assert measured == pytest.approx(target, abs=0.05)


def test_labelers_in_a_crowd_differ_in_noise_skill_and_skips():
    crowd = sim.make_crowd(6, seed=3)
    assert [labeler.name for labeler in crowd] == [f"sim-labeler-{i}" for i in range(1, 7)]
    for attribute in ("noise", "skill", "skip_rate"):
        assert len({getattr(labeler, attribute) for labeler in crowd}) == 6
    assert all(0.6 <= labeler.skill <= 0.95 and labeler.skip_rate <= 0.04 for labeler in crowd)


def test_the_same_seed_makes_the_same_crowd():
    assert sim.make_crowd(3, seed=5) == sim.make_crowd(3, seed=5)
    assert sim.make_crowd(3, seed=5) != sim.make_crowd(3, seed=6)


def test_a_higher_agreement_target_means_less_noise():
    noises = [
        sum(labeler.noise for labeler in sim.make_crowd(4, agreement=target, seed=2))
        for target in (0.6, 0.73, 0.9)
    ]
    assert noises[0] > noises[1] > noises[2] > 0


def test_make_crowd_refuses_a_target_outside_one_half_to_one():
    for target in (0.5, 1.0, 1.2):
        with pytest.raises(ValueError, match="agreement"):
            sim.make_crowd(3, agreement=target, seed=0)


def test_expected_agreement_matches_the_hand_computed_value_for_one_gap():
    # Two labelers with noise 0.2 on a gap of 0.1, no ties: each orders it right with
    # p = Phi(0.1 / (0.2 * sqrt 2)); they agree with p^2 + (1 - p)^2.
    p = NormalDist().cdf(0.1 / (0.2 * math.sqrt(2)))
    value = sim.expected_agreement([0.2, 0.2], np.array([0.1]), tie_eps=0.0)
    assert value == pytest.approx(p * p + (1 - p) ** 2, abs=1e-9)


def test_expected_agreement_pools_labeler_pairs_like_the_selector():
    # Three labelers: pooled over the three pairs, each weighted by its strict pairs.
    noises, gaps, eps = [0.1, 0.3, 0.5], np.array([0.05, -0.2, 0.4]), 0.02
    agreed = total = 0.0
    for i, j in combinations(range(3), 2):
        for d in gaps:
            perceived = [NormalDist(d, noises[x] * math.sqrt(2)) for x in (i, j)]
            ahead = [1 - dist.cdf(eps) for dist in perceived]  # P(d + noise >= eps)
            behind = [dist.cdf(-eps) for dist in perceived]  # P(d + noise <= -eps)
            agreed += ahead[0] * ahead[1] + behind[0] * behind[1]
            total += (ahead[0] + behind[0]) * (ahead[1] + behind[1])
    value = sim.expected_agreement(noises, gaps, tie_eps=eps)
    assert value == pytest.approx(agreed / total, abs=1e-9)


def test_noiseless_labelers_agree_on_every_real_gap_and_flip_coins_on_none():
    assert sim.expected_agreement([1e-9, 1e-9], np.array([0.3, -0.1]), tie_eps=0.0) == 1.0
    assert sim.expected_agreement([0.2, 0.4], np.zeros(5), tie_eps=0.0) == pytest.approx(0.5)


def test_measured_agreement_leaves_out_pairs_either_labeler_tied():
    ranks = {
        "ann": {1: [1, 2, 3], 2: [1, 1, 3]},
        "ben": {1: [1, 3, 2], 2: [2, 1, 3], 3: [1, 2, 3]},
    }
    # item 1: pairs (0,1) agree, (0,2) agree, (1,2) disagree; item 2: ann tied (0,1), the
    # other two pairs agree; item 3 is not shared.
    assert sim.measured_agreement(ranks) == pytest.approx(4 / 5)


def test_better_completions_win_more_often(held_out_rankings):
    crowd = sim.make_crowd(5, seed=9)
    rng = random.Random(4)
    wins_by_gap: dict[str, list[int]] = {"small": [], "large": []}
    compare_wins = []
    for labeler in crowd:
        for prompt, completions in held_out_rankings[:120]:
            qualities = [judge(prompt, text).quality for text in completions]
            entries = labeler.rank(prompt, completions, rng)
            for x, y in combinations(range(len(completions)), 2):
                gap = abs(qualities[x] - qualities[y])
                if gap == 0 or entries[x].rank == entries[y].rank:
                    continue
                better, worse = (x, y) if qualities[x] > qualities[y] else (y, x)
                won = entries[better].rank < entries[worse].rank
                wins_by_gap["small" if gap < 0.3 else "large"].append(won)
            best, worst = np.argmax(qualities), np.argmin(qualities)
            winner = labeler.compare(prompt, completions[best], completions[worst], rng)
            if winner in ("a", "b"):
                compare_wins.append(winner == "a")
    small, large = (np.mean(wins_by_gap[k]) for k in ("small", "large"))
    assert 0.5 < small < large
    assert np.mean(compare_wins) > 0.75


def test_a_noiseless_labeler_ranks_by_judge_quality_and_ties_equal_outputs():
    prompt = "What is 3 plus 4?"
    completions = ["3 plus 4 is 9.", "3 plus 4 is 7.", "Maybe.", "3 plus 4 is 7."]
    entries = _labeler().rank(prompt, completions, random.Random(0))
    assert [e.rank for e in entries] == [3, 1, 4, 1]
    for text, entry in zip(completions, entries, strict=True):
        judged = judge(prompt, text)
        assert entry.likert == judged.likert
        assert entry.flags == judged.flags


def test_ranks_tie_outputs_whose_perceived_quality_is_within_tie_eps():
    prompt = "What is 3 plus 4?"
    completions = ["3 plus 4 is 7.", "3 plus 4 is 8.", "Maybe."]  # quality 1.0, 0.43, 0.0
    rng = random.Random(0)
    assert [e.rank for e in _labeler(tie_eps=0.6).rank(prompt, completions, rng)] == [1, 1, 1]
    # Gaps 0.57 then 0.43: within 0.6 both tie and the ties chain down the sorted list.
    assert [e.rank for e in _labeler(tie_eps=0.5).rank(prompt, completions, rng)] == [1, 2, 2]
    assert [e.rank for e in _labeler(tie_eps=0.4).rank(prompt, completions, rng)] == [1, 2, 3]
    entries = _labeler(tie_eps=0.4).rank(prompt, [completions[1], *completions], rng)
    assert [e.rank for e in entries] == [2, 1, 2, 4]


def test_comparisons_say_tie_for_equal_outputs_and_both_bad_when_both_fail():
    labeler, rng = _labeler(), random.Random(0)
    prompt = "Is 7 greater than 4? Answer yes or no."
    assert labeler.compare(prompt, "Yes.", "No.", rng) == "a"
    assert labeler.compare(prompt, "No.", "Yes.", rng) == "b"
    assert labeler.compare(prompt, "Yes.", "Yes!", rng) == "tie"
    assert labeler.compare(prompt, "Maybe.", "No.", rng) == "both_bad"


def test_skilled_labelers_write_the_gold_answer_and_unskilled_ones_worse():
    prompts = sample_prompts(80, seed=3)
    rng = random.Random(1)
    skilled = [_labeler(skill=1.0).write_demonstration(p, rng) for p in prompts]
    assert skilled == [gold_response(p) for p in prompts]
    sloppy = [_labeler(skill=0.0).write_demonstration(p, rng) for p in prompts]
    quality = np.mean([judge(p, text).quality for p, text in zip(prompts, sloppy, strict=True)])
    assert all(text.strip() for text in sloppy)
    assert quality < 0.8 * np.mean([judge(p, gold_response(p)).quality for p in prompts])


def test_a_prompt_outside_the_demo_families_still_gets_an_answer():
    text = _labeler().write_demonstration("Explain photosynthesis to a child.", random.Random(0))
    assert "photosynthesis" in text


def test_synthetic_completions_are_distinct_and_mostly_of_distinct_quality():
    items = sim.synthetic_rankings(100, k=4, seed=0)
    assert all(len(set(completions)) == 4 for _, completions in items)
    gaps = sim.quality_gaps(items)
    assert len(gaps) == 100 * 6
    assert np.mean(gaps == 0) < 0.05


def test_gold_win_rate_counts_judged_wins_and_ties_per_prompt():
    prompts = sample_prompts(20, seed=0)
    gold = [gold_response(p) for p in prompts]
    empty = [""] * len(prompts)
    better = sim.gold_win_rate(prompts, [gold, gold], [empty, empty])
    assert (better.rate, better.wins, better.ties, better.losses) == (1.0, 40, 0, 0)
    same = sim.gold_win_rate(prompts, [gold], [gold])
    assert (same.rate, same.ties) == (0.5, 20)
    worse = sim.gold_win_rate(prompts, [empty], [gold])
    assert worse.rate == 0.0 and worse.high < 0.5
