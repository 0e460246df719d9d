"""The count-based statistics (the reviewer dashboard at scale) pinned to the record-based ones in
labeling/stats.py. No DB: runs with -p no:django --noconftest too.

Point estimates must be equal (1e-9 relative). Intervals come from the same bootstrap
distribution with different draws, so they are compared with a tolerance: for win rates the
Monte Carlo error of a 2.5% / 97.5% percentile of 4,000 draws (about 0.01 on these data); for
ratings 15 Elo at 400 draws on intervals ~50 Elo wide (the ends differed by under 4 Elo when
this was written).
"""

from __future__ import annotations

import pytest

from labeling.stats import (
    bradley_terry,
    bradley_terry_draws,
    mean_likert,
    mean_likert_from_counts,
    metadata_rates,
    metadata_rates_from_counts,
    ratings_anchored,
    verdict_counts,
    win_rate,
    win_rate_clusters,
    win_rate_from_counts,
)

from .test_stats import ROWS, by_model, judged, simulate


def counted_win_rate(comparisons, *, model, baseline, **kwargs):
    plain = win_rate(comparisons, model=model, baseline=baseline, n_boot=1)
    clusters = win_rate_clusters(comparisons, model=model, baseline=baseline)
    return win_rate_from_counts(
        model=model,
        baseline=baseline,
        wins=plain.wins,
        losses=plain.losses,
        ties=plain.ties,
        clusters=clusters,
        **kwargs,
    )


def test_clusters_are_signatures_of_prompts_by_hand():
    comparisons = [
        judged("ppo", "sft", "a", prompt_id=1),  # prompt 1: ppo 1 + 1/2 of 2
        judged("sft", "ppo", "tie", prompt_id=1),
        judged("sft", "ppo", "b", prompt_id=2),  # prompt 2: ppo 1 of 1
        judged("ppo", "sft", "a", prompt_id=3),  # prompt 3: ppo 1 of 1
        judged("ppo", "sft", "b", prompt_id=4),  # prompt 4: ppo 0 of 1
        judged("ppo", "base", "a", prompt_id=4),  # another baseline: ignored
    ]
    # (score in half points, judgements, prompts)
    assert win_rate_clusters(comparisons, model="ppo", baseline="sft") == [
        (0, 1, 1),
        (2, 1, 2),
        (3, 2, 1),
    ]
    assert win_rate_clusters(comparisons, model="sft", baseline="ppo") == [
        (0, 1, 2),
        (1, 2, 1),
        (2, 1, 1),
    ]


def test_the_win_rate_from_counts_equals_the_plain_one_and_its_interval_agrees():
    comparisons = simulate({"ppo": 1100, "sft": 1000}, 1500, seed=1, tie_share=0.2)
    plain = win_rate(comparisons, model="ppo", baseline="sft", n_boot=4000)
    counted = counted_win_rate(comparisons, model="ppo", baseline="sft", n_boot=4000)
    assert (counted.n, counted.wins, counted.losses, counted.ties) == (
        plain.n,
        plain.wins,
        plain.losses,
        plain.ties,
    )
    assert counted.rate == pytest.approx(plain.rate, rel=1e-12)
    assert counted.low == pytest.approx(plain.low, abs=0.01)
    assert counted.high == pytest.approx(plain.high, abs=0.01)
    assert counted.low < counted.rate < counted.high


def test_the_clustered_interval_from_counts_is_wide_when_prompts_agree():
    # As test_win_rate_interval_is_wider_when_judgements_of_a_prompt_agree, from counts.
    clustered = [
        judged("ppo", "sft", "a" if p % 2 else "b", prompt_id=p, labeler_id=j)
        for p in range(20)
        for j in range(10)
    ]
    independent = [judged("ppo", "sft", "a" if p % 2 else "b", prompt_id=p) for p in range(200)]
    wide = counted_win_rate(clustered, model="ppo", baseline="sft")
    narrow = counted_win_rate(independent, model="ppo", baseline="sft")
    plain_wide = win_rate(clustered, model="ppo", baseline="sft")
    assert wide.rate == narrow.rate == 0.5
    assert wide.high - wide.low > 2.5 * (narrow.high - narrow.low)
    assert wide.low == pytest.approx(plain_wide.low, abs=0.05)


def test_one_prompt_collapses_the_interval_and_no_judgement_gives_none():
    one = [judged("ppo", "sft", "a"), judged("ppo", "sft", "b")]
    result = counted_win_rate(one, model="ppo", baseline="sft")
    assert result.rate == result.low == result.high == 0.5
    none = win_rate_from_counts(model="ppo", baseline="sft", wins=0, losses=0, ties=0, clusters=[])
    assert (none.n, none.rate, none.low, none.high) == (0, None, None, None)


def test_the_ratings_from_counts_equal_the_plain_fit():
    truth = {"base": 850, "sft": 1000, "ppo": 1120}
    comparisons = simulate(truth, 3000, seed=3, tie_share=0.1)
    comparisons += [judged("sft", "sft", "tie")]  # a model against itself counts once
    for anchor in (None, "sft", "base"):
        plain = by_model(bradley_terry(comparisons, anchor=anchor, n_boot=0))
        draws = bradley_terry_draws(verdict_counts(comparisons), n_boot=0)
        counted = by_model(ratings_anchored(draws, anchor=anchor))
        for model, rating in plain.items():
            assert counted[model].rating == pytest.approx(rating.rating, rel=1e-9)
            assert counted[model].n == rating.n


def test_the_rating_intervals_from_counts_come_from_the_same_bootstrap():
    truth = {"base": 850, "sft": 1000, "ppo": 1120}
    comparisons = simulate(truth, 1500, seed=5, tie_share=0.1)
    plain = by_model(bradley_terry(comparisons, anchor="sft", n_boot=400))
    draws = bradley_terry_draws(verdict_counts(comparisons), n_boot=400)
    counted = by_model(ratings_anchored(draws, anchor="sft"))
    assert (counted["sft"].low, counted["sft"].high) == (1000, 1000)  # the anchor's own
    for model in ("base", "ppo"):
        assert counted[model].low == pytest.approx(plain[model].low, abs=15)
        assert counted[model].high == pytest.approx(plain[model].high, abs=15)


def test_length_controlled_ratings_from_exact_groups_equal_the_plain_fit():
    truth = {"terse": 1000, "verbose": 1000, "ppo": 1100}
    lengths = {"terse": (50, 400), "verbose": (200, 800), "ppo": (100, 500)}
    comparisons = simulate(truth, 1500, seed=11, lengths=lengths, length_bias=4.0)
    plain = by_model(bradley_terry(comparisons, n_boot=0, length_controlled=True))
    draws = bradley_terry_draws(verdict_counts(comparisons), n_boot=0, length_controlled=True)
    counted = by_model(ratings_anchored(draws))
    for model, rating in plain.items():
        assert counted[model].rating == pytest.approx(rating.rating, rel=1e-9)


# The database bins d = (len_a − len_b)/(len_a + len_b) by round(d · 100) (training/review.py,
# LENGTH_BINS_PER_UNIT): a group's covariate is its mean d, within 0.005 of each member's.
# Measured on this strongly length-biased judge the ratings move by under 0.01 Elo (by 0.3 Elo
# at 20 bins per unit, 5 Elo at 5); the stated tolerance is 0.5 Elo.
LENGTH_TOLERANCE_ELO = 0.5


def test_length_controlled_ratings_from_binned_counts_stay_within_the_stated_tolerance():
    truth = {"terse": 1000, "verbose": 1000, "ppo": 1100}
    lengths = {"terse": (50, 400), "verbose": (200, 800), "ppo": (100, 500)}
    comparisons = simulate(truth, 3000, seed=12, lengths=lengths, length_bias=4.0)
    plain = by_model(bradley_terry(comparisons, n_boot=0, length_controlled=True))
    groups = verdict_counts(comparisons, bins_per_unit=100)
    assert len(groups) < len(verdict_counts(comparisons))  # the bins do group
    draws = bradley_terry_draws(groups, n_boot=0, length_controlled=True)
    counted = by_model(ratings_anchored(draws))
    for model, rating in plain.items():
        assert counted[model].rating == pytest.approx(rating.rating, abs=LENGTH_TOLERANCE_ELO)


def test_a_refit_stops_early_from_the_point_fit():
    # Warm-started refits with a relative stop: a bootstrap of 100 refits is fast and its draws
    # are the converged fits (a tighter tolerance moves them by far less than an Elo).
    comparisons = simulate({"base": 900, "sft": 1000, "ppo": 1100}, 2000, seed=2)
    groups = verdict_counts(comparisons)
    loose = bradley_terry_draws(groups, n_boot=20, seed=3)
    tight = bradley_terry_draws(groups, n_boot=20, seed=3, rtol=1e-13)
    for loose_draw, tight_draw in zip(loose.boot, tight.boot, strict=True):
        assert loose_draw == pytest.approx(tight_draw, abs=1e-3)


def test_ratings_of_no_groups_are_empty_and_a_foreign_anchor_is_refused():
    assert ratings_anchored(bradley_terry_draws([], n_boot=10)) == []
    draws = bradley_terry_draws(verdict_counts([judged("ppo", "sft", "a")]), n_boot=2)
    with pytest.raises(ValueError, match="anchor"):
        ratings_anchored(draws, anchor="base")


def test_metadata_and_likert_from_counts_equal_the_plain_ones():
    outputs: dict[str, int] = {}
    flagged: dict[str, dict[str, int]] = {}
    totals: dict[str, tuple[int, int]] = {}
    for model, likert, raised in ROWS + [("ppo", 5, ["hallucination", "hallucination"])]:
        outputs[model] = outputs.get(model, 0) + 1
        for flag in set(raised):
            flagged.setdefault(model, {}).setdefault(flag, 0)
            flagged[model][flag] += 1
        total, n = totals.get(model, (0, 0))
        totals[model] = (total + likert, n + 1)
    rows = ROWS + [("ppo", 5, ["hallucination", "hallucination"])]
    flags = ["inappropriate_customer_assistant"]
    assert metadata_rates_from_counts(outputs, flagged, flags=flags) == metadata_rates(
        rows, flags=flags
    )
    assert mean_likert_from_counts(totals) == mean_likert(rows)
