"""labeling/stats.py against hand-computed values and simulations with known answers. No DB.

Runs without Django too: pytest tests/labeling/test_stats.py -p no:django --noconftest
(tests/conftest.py imports the Django models, so it must be skipped when the Django plugin is off).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeling.stats import (
    PAIRS_TO_TELL_60_FROM_50,
    Agreement,
    PairVerdict,
    bradley_terry,
    held_out_accuracy,
    mean_likert,
    metadata_rates,
    pairwise_agreement,
    preferences,
    trials_to_tell_apart,
    wilson_interval,
    win_rate,
    within_prompt_agreement,
)


def judged(model_a, model_b, winner, *, prompt_id=1, len_a=100, len_b=100, labeler_id=1):
    return PairVerdict(model_a, model_b, winner, len_a, len_b, prompt_id, labeler_id)


def simulate(true_ratings, n, *, seed, lengths=None, length_bias=0.0, tie_share=0.0):
    """Comparisons from a Bradley–Terry judge, optionally one that also prefers longer answers.

    P(a wins | not a tie) = sigmoid(ln10·(Ra − Rb)/400 + length_bias·(la − lb)/(la + lb)).
    `lengths[model]` is (low, high) of a uniform length distribution.
    """
    rng = np.random.default_rng(seed)
    models = list(true_ratings)
    comparisons = []
    for i in range(n):
        model_a, model_b = rng.choice(models, size=2, replace=False)
        len_a, len_b = (
            int(rng.integers(*lengths[m])) if lengths else 100 for m in (model_a, model_b)
        )
        logit = math.log(10) * (true_ratings[model_a] - true_ratings[model_b]) / 400
        logit += length_bias * (len_a - len_b) / (len_a + len_b)
        if rng.random() < tie_share:
            winner = "tie"
        else:
            winner = "a" if rng.random() < 1 / (1 + math.exp(-logit)) else "b"
        comparisons.append(
            PairVerdict(str(model_a), str(model_b), winner, len_a, len_b, i % 300, i % 7)
        )
    return comparisons


def by_model(ratings):
    return {r.model: r for r in ratings}


# --- PairVerdict -----------------------------------------------------------------------------


def test_a_pair_verdict_rejects_an_unknown_winner():
    with pytest.raises(ValueError, match="winner"):
        judged("sft", "ppo", "draw")


# --- win_rate -------------------------------------------------------------------------------


def test_win_rate_of_three_judgements_by_hand():
    comparisons = [
        judged("ppo", "sft", "a", prompt_id=1),  # ppo wins on side a
        judged("sft", "ppo", "b", prompt_id=2),  # ppo wins on side b
        judged("sft", "ppo", "both_bad", prompt_id=3),  # counts as a tie
        judged("ppo", "base", "a", prompt_id=1),  # another baseline: ignored
        judged("sft", "base", "b", prompt_id=1),  # ppo not involved: ignored
    ]
    result = win_rate(comparisons, model="ppo", baseline="sft")
    assert (result.n, result.wins, result.losses, result.ties) == (3, 2, 0, 1)
    assert result.rate == pytest.approx((2 + 1 / 2) / 3)
    flipped = win_rate(comparisons, model="sft", baseline="ppo")
    assert flipped.rate == pytest.approx(0.5 / 3)


def test_win_rate_interval_contains_the_estimate_and_is_deterministic_for_a_seed():
    comparisons = simulate({"ppo": 1100, "sft": 1000}, 200, seed=1, tie_share=0.2)
    first = win_rate(comparisons, model="ppo", baseline="sft", seed=7)
    again = win_rate(comparisons, model="ppo", baseline="sft", seed=7)
    other_seed = win_rate(comparisons, model="ppo", baseline="sft", seed=8)
    assert first.low < first.rate < first.high
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other_seed.low, other_seed.high)


def test_win_rate_interval_shrinks_with_more_data():
    few = win_rate(simulate({"ppo": 1100, "sft": 1000}, 100, seed=2), model="ppo", baseline="sft")
    many = win_rate(simulate({"ppo": 1100, "sft": 1000}, 3000, seed=2), model="ppo", baseline="sft")
    assert many.high - many.low < (few.high - few.low) / 2


def test_win_rate_interval_is_wider_when_judgements_of_a_prompt_agree():
    # Same 50% rate from 200 judgements: 20 prompts judged 10 times each, unanimously, carry far
    # less information than 200 prompts judged once; the prompt-clustered bootstrap sees that.
    clustered = [
        judged("ppo", "sft", "a" if p % 2 else "b", prompt_id=p, labeler_id=j)
        for p in range(20)
        for j in range(10)
    ]
    independent = [judged("ppo", "sft", "a" if p % 2 else "b", prompt_id=p) for p in range(200)]
    wide = win_rate(clustered, model="ppo", baseline="sft")
    narrow = win_rate(independent, model="ppo", baseline="sft")
    assert wide.rate == narrow.rate == 0.5
    assert wide.high - wide.low > 2.5 * (narrow.high - narrow.low)


def test_win_rate_of_no_comparisons_is_none():
    result = win_rate([judged("sft", "base", "a")], model="ppo", baseline="sft")
    assert (result.n, result.rate, result.low, result.high) == (0, None, None, None)
    assert win_rate([], model="ppo", baseline="sft").rate is None


# --- bradley_terry --------------------------------------------------------------------------


def test_bradley_terry_on_two_models_matches_the_closed_form():
    # 60 wins, 20 ties, 20 losses: p = (60 + 20/2)/100 = 0.7, so the MLE rating gap is
    # 400·log10(0.7/0.3) = 147.19 Elo, centred on 1000.
    comparisons = (
        [judged("ppo", "sft", "a", prompt_id=i) for i in range(30)]
        + [judged("sft", "ppo", "b", prompt_id=i) for i in range(30, 60)]
        + [judged("ppo", "sft", "tie", prompt_id=i) for i in range(60, 70)]
        + [judged("sft", "ppo", "both_bad", prompt_id=i) for i in range(70, 80)]
        + [judged("sft", "ppo", "a", prompt_id=i) for i in range(80, 100)]
    )
    ratings = by_model(bradley_terry(comparisons, n_boot=50))
    gap = 400 * math.log10(0.7 / 0.3)
    assert ratings["ppo"].rating - ratings["sft"].rating == pytest.approx(gap, abs=0.5)
    assert (ratings["ppo"].rating + ratings["sft"].rating) / 2 == pytest.approx(1000)
    assert ratings["ppo"].n == ratings["sft"].n == 100


def test_bradley_terry_keeps_a_model_that_won_everything_finite():
    comparisons = [judged("ppo", "sft", "a", prompt_id=i) for i in range(5)]
    ratings = by_model(bradley_terry(comparisons, anchor="sft", n_boot=20))
    assert ratings["sft"].rating == pytest.approx(1000)
    assert 1000 < ratings["ppo"].rating < 3000
    assert math.isfinite(ratings["ppo"].high)


def test_bradley_terry_recovers_simulated_ratings_within_40_elo():
    # Ties drawn regardless of strength flatten the win curve, so ratings come back ~10% closer
    # together (ppo ≈ 1102, base ≈ 872 here): within the tolerance, and the order is exact.
    truth = {"base": 850, "sft": 1000, "ppo": 1120}
    comparisons = simulate(truth, 3000, seed=3, tie_share=0.1)
    ratings = bradley_terry(comparisons, anchor="sft", n_boot=100)
    assert [r.model for r in ratings] == ["ppo", "sft", "base"]
    for r in ratings:
        assert r.rating == pytest.approx(truth[r.model], abs=40)
        assert r.low <= r.rating <= r.high
    assert by_model(ratings)["sft"].rating == pytest.approx(1000)


def test_bradley_terry_bootstrap_is_deterministic_for_a_seed():
    comparisons = simulate({"sft": 1000, "ppo": 1100}, 300, seed=4)
    assert bradley_terry(comparisons, seed=5, n_boot=50) == bradley_terry(
        comparisons, seed=5, n_boot=50
    )


def test_length_control_removes_a_pure_length_bias():
    # Two equally good models; "verbose" writes about twice as long and the judge likes length.
    truth = {"terse": 1000, "verbose": 1000}
    lengths = {"terse": (50, 400), "verbose": (200, 800)}
    comparisons = simulate(truth, 3000, seed=11, lengths=lengths, length_bias=4.0, tie_share=0.1)

    plain = by_model(bradley_terry(comparisons, n_boot=100))
    assert plain["verbose"].low > plain["terse"].high  # length bias reads as quality

    controlled = by_model(bradley_terry(comparisons, n_boot=100, length_controlled=True))
    assert controlled["verbose"].low <= controlled["terse"].high
    assert controlled["terse"].low <= controlled["verbose"].high
    plain_gap = plain["verbose"].rating - plain["terse"].rating
    controlled_gap = controlled["verbose"].rating - controlled["terse"].rating
    assert abs(controlled_gap) < plain_gap / 4


def test_length_control_leaves_ratings_alone_when_lengths_carry_no_signal():
    truth = {"base": 900, "sft": 1000, "ppo": 1100}
    comparisons = simulate(truth, 2000, seed=8)  # every answer 100 long: length_diff is all 0
    plain = by_model(bradley_terry(comparisons, n_boot=0))
    controlled = by_model(bradley_terry(comparisons, n_boot=0, length_controlled=True))
    for model in truth:
        assert controlled[model].rating == pytest.approx(plain[model].rating, abs=1e-6)


def test_bradley_terry_rejects_an_anchor_that_was_not_compared():
    with pytest.raises(ValueError, match="anchor"):
        bradley_terry([judged("ppo", "sft", "a")], anchor="base")


def test_bradley_terry_of_no_comparisons_is_empty():
    assert bradley_terry([]) == []
    assert bradley_terry([], length_controlled=True, anchor="sft") == []


# --- metadata -------------------------------------------------------------------------------


ROWS = [
    ("sft", 5, ["hallucination"]),
    ("sft", 3, ["hallucination", "harmful_advice"]),
    ("sft", 4, []),
    ("sft", 6, []),
    ("ppo", 7, []),
    ("ppo", 6, ["satisfies_constraint"]),
]


def test_metadata_rates_are_shares_of_each_models_outputs():
    rates = metadata_rates(ROWS, flags=["inappropriate_customer_assistant"])
    assert rates == {
        "sft": {
            "hallucination": 0.5,
            "harmful_advice": 0.25,
            "inappropriate_customer_assistant": 0.0,
            "satisfies_constraint": 0.0,
        },
        "ppo": {
            "hallucination": 0.0,
            "harmful_advice": 0.0,
            "inappropriate_customer_assistant": 0.0,
            "satisfies_constraint": 0.5,
        },
    }


def test_mean_likert_per_model_with_counts():
    assert mean_likert(ROWS) == {"sft": (4.5, 4), "ppo": (6.5, 2)}


def test_metadata_of_no_rows_is_empty():
    assert metadata_rates([]) == {}
    assert mean_likert([]) == {}


# --- labeler agreement -----------------------------------------------------------------------


def test_preferences_order_each_pair_once_and_leave_ties_out():
    assert preferences({10: 1, 11: 2, 12: 2}) == {(10, 11): 1, (10, 12): 1}
    assert preferences({7: 1, 5: 3}) == {(5, 7): -1}
    assert preferences({1: 2, 2: 2}) == {}


def test_pairwise_agreement_against_hand_counted_pairs():
    """Task 1: labelers 1, 2, 3 on outputs 10-12; task 2: labelers 1 and 2 on 20-21; task 3: one
    labeler only, so it compares nothing. Rows in no particular order, as a query returns them."""
    rows = [
        (2, 2, 21, 1), (1, 1, 10, 1), (1, 2, 12, 3), (1, 3, 10, 1), (3, 3, 30, 1),
        (1, 1, 11, 2), (1, 2, 10, 2), (1, 3, 11, 1), (1, 1, 12, 3), (1, 2, 11, 1),
        (1, 3, 12, 2), (2, 1, 20, 1), (2, 1, 21, 2), (2, 2, 20, 2), (3, 3, 31, 2),
    ]  # fmt: skip
    # Task 1: 1 vs 2 agree on (10,12) and (11,12), not (10,11): 2 of 3. Labeler 3 tied 10 and
    # 11, so against 1 and against 2 only (10,12) and (11,12) count: 2 of 2 each.
    # Task 2: 1 vs 2 disagree on (20,21): 0 of 1.
    agreement = pairwise_agreement(rows)
    assert agreement.comparisons == 3 + 2 + 2 + 1
    assert agreement.overall == pytest.approx(6 / 8)
    assert agreement.pairs == pytest.approx({(1, 2): 2 / 4, (1, 3): 1.0, (2, 3): 1.0})
    assert agreement.per_labeler == pytest.approx({1: 4 / 6, 2: 4 / 6, 3: 4 / 4})


def test_pairwise_agreement_of_nothing_compared_is_none():
    assert pairwise_agreement([]) == Agreement(
        overall=None, comparisons=0, pairs={}, per_labeler={}
    )
    both_tied = [(1, 1, 10, 1), (1, 1, 11, 1), (1, 2, 10, 2), (1, 2, 11, 1)]
    agreement = pairwise_agreement(both_tied)
    assert (agreement.overall, agreement.comparisons, agreement.pairs) == (None, 0, {})


def test_two_labelers_who_rank_alike_agree_fully_and_opposite_not_at_all():
    same = [(1, lab, c, r) for lab in (1, 2) for c, r in ((10, 1), (11, 2), (12, 3))]
    assert pairwise_agreement(same).overall == 1.0
    flipped = [(1, 1, c, r) for c, r in ((10, 1), (11, 2), (12, 3))]
    flipped += [(1, 2, c, 4 - r) for c, r in ((10, 1), (11, 2), (12, 3))]
    assert pairwise_agreement(flipped).overall == 0.0


# --- the Wilson interval and the pairs a reward model's accuracy needs --------------------------


def test_wilson_interval_of_8_in_10_by_hand():
    # p = 0.8, z² = 1.95996² = 3.84146, 1 + z²/n = 1.384146;
    # centre = (0.8 + 0.192073) / 1.384146 = 0.716740,
    # half = 1.95996 · sqrt(0.016 + 3.84146/400) / 1.384146 = 1.95996 · 0.160012 / 1.384146 = 0.226577.
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490162, abs=1e-6), pytest.approx(0.943318, abs=1e-6))


def test_wilson_interval_is_symmetric_at_one_half_and_not_a_point_at_zero():
    # 5/10: centre 0.5, half = 1.95996 · sqrt(0.025 + 0.009604) / 1.384146 = 0.263407.
    assert wilson_interval(5, 10) == (pytest.approx(0.236593, abs=1e-6),
                                      pytest.approx(0.763407, abs=1e-6))  # fmt: skip
    # 0/10: the Wald interval is [0, 0]; Wilson's upper end is z²/n / (1 + z²/n) = 0.277533.
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.277533, abs=1e-6)


def test_wilson_interval_refuses_no_trials_or_impossible_counts():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(11, 10)


def test_194_pairs_tell_a_60_percent_reward_model_from_chance():
    # (1.95996·0.5 + 0.84162·sqrt(0.24))² / 0.1² = 1.39229² / 0.01 = 193.85
    assert trials_to_tell_apart(0.6, 0.5, alpha=0.05, power=0.8) == 194
    assert PAIRS_TO_TELL_60_FROM_50 == 194
    # More power or a smaller gap needs more pairs: 90% power gives 259 (z = 1.28155).
    assert trials_to_tell_apart(0.6, 0.5, power=0.9) == 259
    assert trials_to_tell_apart(0.55, 0.5) > 194


def test_a_58_percent_accuracy_on_40_rankings_pairs_is_not_told_from_chance():
    """The dashboard's bare "58%": on 40 pairs its interval holds 50%; on 240 it does not, but
    even then the pairs of one ranking are correlated (rankings say how many there were)."""
    small = held_out_accuracy(0.575, pairs=40, rankings=40)
    assert small is not None and (small.low, small.high) == (
        pytest.approx(0.422, abs=1e-3),
        pytest.approx(0.715, abs=1e-3),
    )
    assert not small.excludes_chance and not small.enough_pairs
    large = held_out_accuracy(0.5833, pairs=240, rankings=40)
    assert large is not None and large.excludes_chance and large.enough_pairs
    assert large.low == pytest.approx(0.520127, abs=1e-6)  # 140 of 240
    assert held_out_accuracy(0.7, pairs=0) is None


def test_within_prompt_agreement_counts_pairs_of_one_prompt_and_skips_reference_ties():
    groups = [
        # prompt 1: reference order c > b > a; the scorer gets (b, a) and (c, a) right, (c, b) wrong
        [(0.1, 0.0), (0.9, 0.5), (0.5, 1.0)],
        # prompt 2: a reference tie (skipped) and a scorer tie against a real difference (a miss)
        [(0.3, 0.2), (0.7, 0.2), (0.7, 0.9)],
        [(5.0, 0.4)],  # one answer: no pair, and not counted as a prompt
    ]
    result = within_prompt_agreement(groups)
    # pairs: 3 from prompt 1 (2 agree), 2 from prompt 2 ((0.3, 0.2) vs (0.7, 0.9) agrees;
    # (0.7, 0.2) vs (0.7, 0.9) is a scorer tie): 3 of 5
    assert (result.accuracy, result.pairs, result.rankings) == (0.6, 5, 2)
    assert (result.low, result.high) == pytest.approx(wilson_interval(3, 5))
    assert within_prompt_agreement([[(1.0, 0.5), (2.0, 0.5)]]) is None
