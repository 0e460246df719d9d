"""The statistics reviewers read: win rates, Bradley–Terry ratings, metadata, labeler agreement,
and the interval of a proportion (a reward model's held-out pair accuracy).

Plain records in, small frozen dataclasses out; stdlib + numpy only, so every number here can be
checked from a shell or a test without a database. Selectors turn rows into these records.

Judgements of one prompt are correlated (same difficulty, same labeler mood), so the win-rate
interval resamples whole prompts; the Bradley–Terry interval resamples comparisons, as Chatbot
Arena does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import Literal

import numpy as np

# Which side of a blind pairwise judgement won. Not labeling.models.Winner (the database's choices
# for the same four values): this module takes plain records and knows no Django.
Outcome = Literal["a", "b", "tie", "both_bad"]
OUTCOMES = ("a", "b", "tie", "both_bad")

# Elo scale as in Chatbot Arena: rating = 400·log10(odds) + 1000.
SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0
# L2 penalty on the log10-odds coefficients of the Bradley–Terry fit: a Gaussian prior with sd 10
# (4000 Elo). Negligible against a few comparisons' likelihood, but it keeps a model that won
# everything finite (the unpenalised MLE does not exist then) and pins the free shift to mean 0.
L2 = 0.01


@dataclass(frozen=True)
class PairVerdict:
    """One blind pairwise judgement: which of two models' answers to one prompt was better (the
    plain record of a labeling.models.Comparison row, or of a simulated judge's verdict)."""

    model_a: str
    model_b: str
    winner: Outcome  # "both_bad" is scored as a tie everywhere here
    len_a: int  # answer lengths, for the length-controlled ratings
    len_b: int
    prompt_id: int
    labeler_id: int

    def __post_init__(self) -> None:
        if self.winner not in OUTCOMES:
            raise ValueError(f"winner must be one of {OUTCOMES}, not {self.winner!r}")

    @property
    def score_a(self) -> float:
        """1 if a won, 0 if b won, 1/2 for a tie or both bad."""
        return {"a": 1.0, "b": 0.0}.get(self.winner, 0.5)


@dataclass(frozen=True)
class WinRate:
    model: str
    baseline: str
    n: int
    wins: int
    losses: int
    ties: int  # ties and "both bad"
    rate: float | None  # (wins + ties/2) / n; None when n == 0
    low: float | None  # 95% prompt-clustered bootstrap interval
    high: float | None


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float  # Elo scale
    low: float  # 95% bootstrap interval
    high: float
    n: int  # comparisons the model took part in


def win_rate(
    comparisons: Iterable[PairVerdict],
    *,
    model: str,
    baseline: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """Win rate of `model` against `baseline`, ties counting half, with a 95% interval.

    The point estimate is the one InstructGPT reports against its baseline (Ouyang et al. 2022,
    §4.1, https://arxiv.org/abs/2203.02155) and AlpacaEval reports against its reference. The
    interval is a percentile bootstrap (Efron & Tibshirani 1993, ch. 13) clustered by prompt:
    whole prompts are resampled with all their judgements, because judgements of one prompt are
    not independent (Cameron, Gelbach & Miller 2008 on cluster bootstraps; Miller 2024, "Adding
    Error Bars to Evals", https://arxiv.org/abs/2411.00640). With one prompt the interval
    collapses to the point: a clustered bootstrap cannot see variance it has one cluster of.
    """
    wins = losses = ties = 0
    per_prompt: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])  # [score, count]
    for c in comparisons:
        if (c.model_a, c.model_b) == (model, baseline):
            score = c.score_a
        elif (c.model_a, c.model_b) == (baseline, model):
            score = 1.0 - c.score_a
        else:
            continue
        wins += score == 1.0
        losses += score == 0.0
        ties += score == 0.5
        per_prompt[c.prompt_id][0] += score
        per_prompt[c.prompt_id][1] += 1
    n = wins + losses + ties
    if n == 0:
        return WinRate(model, baseline, 0, 0, 0, 0, None, None, None)

    scores, counts = np.array(list(per_prompt.values())).T  # (prompts,) each
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(scores), size=(n_boot, len(scores)))  # (boot, prompts)
    boot_rates = scores[picks].sum(axis=1) / counts[picks].sum(axis=1)  # (boot,)
    low, high = np.percentile(boot_rates, [2.5, 97.5])
    rate = (wins + ties / 2) / n
    return WinRate(model, baseline, n, wins, losses, ties, rate, float(low), float(high))


def bradley_terry(
    comparisons: Sequence[PairVerdict],
    *,
    anchor: str | None = None,
    n_boot: int = 200,
    seed: int = 0,
    length_controlled: bool = False,
) -> list[Rating]:
    """Bradley–Terry ratings on the Elo scale with 95% bootstrap intervals, best first.

    Fitted as Chatbot Arena does (Chiang et al. 2024, §5, https://arxiv.org/abs/2403.04132; the
    `compute_mle_elo` notebook): logistic regression of "a won" on a row holding +log(10) for
    model a and −log(10) for model b, no intercept, so a coefficient is log10-odds and
    rating = 400·coef + 1000. A tie is one win for each side at weight 1/2, which is the same
    loss as one row with target 1/2, the form used here. Ratings are shifted so `anchor` is
    1000 (the mean is 1000 when no anchor is given). The interval is the percentile bootstrap
    over comparisons, refitting each resample, as the Arena leaderboard does; every resample is
    re-anchored, so the anchor's own interval is [1000, 1000] and the others' are relative to it.

    `length_controlled` adds one covariate, the normalised length difference
    (len_a − len_b)/(len_a + len_b), to the same regression — Arena's style control
    (https://lmsys.org/blog/2024-08-28-style-control/) and AlpacaEval's length control
    (Dubois et al. 2024, https://arxiv.org/abs/2404.04475) — and reports the model coefficients,
    i.e. each model's strength with the length effect held out.
    """
    comparisons = list(comparisons)
    if not comparisons:
        return []
    models = sorted({c.model_a for c in comparisons} | {c.model_b for c in comparisons})
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor {anchor!r} is not among the compared models")
    column = {m: i for i, m in enumerate(models)}
    rows = np.arange(len(comparisons))

    features = np.zeros((len(comparisons), len(models)))  # (comparisons, models)
    features[rows, [column[c.model_a] for c in comparisons]] += math.log(BASE)
    features[rows, [column[c.model_b] for c in comparisons]] -= math.log(BASE)
    if length_controlled:
        len_a = np.array([c.len_a for c in comparisons], dtype=float)
        len_b = np.array([c.len_b for c in comparisons], dtype=float)
        total = len_a + len_b
        length_diff = np.divide(len_a - len_b, total, out=np.zeros_like(total), where=total > 0)
        # Scaled to unit spread so the one L2 penalty treats it like a model column. Arena also
        # centres it; we do not, since with no intercept a centred feature would add an
        # "a-side" bias whenever the mean length difference is not zero.
        spread = length_diff.std()
        if spread > 0:
            length_diff = length_diff / spread
        features = np.column_stack([features, length_diff])  # (comparisons, models + 1)
    targets = np.array([c.score_a for c in comparisons])  # (comparisons,)

    def ratings_of(sample: np.ndarray) -> np.ndarray:
        coefs = _fit_logistic(features[sample], targets[sample], l2=L2)[: len(models)]
        ratings = SCALE * coefs
        shift = ratings[column[anchor]] if anchor is not None else ratings.mean()
        return ratings - shift + INIT_RATING  # (models,)

    point = ratings_of(rows)
    resamples = np.random.default_rng(seed).integers(0, len(rows), size=(n_boot, len(rows)))
    boot = np.array([ratings_of(sample) for sample in resamples])  # (boot, models)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0) if n_boot else (point, point)
    n_per_model = dict.fromkeys(models, 0)
    for c in comparisons:
        n_per_model[c.model_a] += 1
        if c.model_b != c.model_a:
            n_per_model[c.model_b] += 1
    ratings = [
        Rating(m, float(point[i]), float(low[i]), float(high[i]), n_per_model[m])
        for i, m in enumerate(models)
    ]
    return sorted(ratings, key=lambda r: -r.rating)


def _fit_logistic(
    features: np.ndarray, targets: np.ndarray, *, l2: float, max_iter: int = 100
) -> np.ndarray:
    """L2-penalised logistic regression (soft targets in [0, 1]) by damped Newton / IRLS.

    Minimises Σ softplus(x·β) − y·(x·β) + l2/2·‖β‖²; the objective is strictly convex, so Newton
    with step halving converges from β = 0 (Hastie, Tibshirani & Friedman, ESL §4.4.1).
    """

    def objective(coefs: np.ndarray) -> float:
        logits = features @ coefs
        return float(np.sum(np.logaddexp(0.0, logits) - targets * logits) + l2 / 2 * coefs @ coefs)

    coefs = np.zeros(features.shape[1])
    eye = np.eye(features.shape[1])
    for _ in range(max_iter):
        probs = 0.5 * (1.0 + np.tanh(features @ coefs / 2))  # sigmoid without overflow
        gradient = features.T @ (probs - targets) + l2 * coefs
        hessian = (features.T * (probs * (1.0 - probs))) @ features + l2 * eye
        step = np.linalg.solve(hessian, gradient)
        current, size = objective(coefs), 1.0
        while objective(coefs - size * step) > current and size > 1e-10:
            size /= 2
        coefs = coefs - size * step
        if np.max(np.abs(size * step)) < 1e-10:
            break
    return coefs


def metadata_rates(
    rows: Iterable[tuple[str, int, Sequence[str]]], *, flags: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """Per model, the share of its rated outputs carrying each metadata flag.

    The per-output flags of InstructGPT's labeling interface (hallucination, fails to follow
    the instruction, inappropriate for a customer assistant, …; Ouyang et al. 2022, Fig. 4 and
    App. B.3). Rows are (model, likert, flags). Every model gets every flag seen in any row,
    plus `flags` (the project's list), so a flag nobody raised reads 0.0 rather than missing.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outputs: dict[str, int] = defaultdict(int)
    all_flags = set(flags)
    for model, _likert, raised in rows:
        outputs[model] += 1
        for flag in set(raised):
            counts[model][flag] += 1
        all_flags.update(raised)
    return {
        model: {flag: counts[model][flag] / n for flag in sorted(all_flags)}
        for model, n in outputs.items()
    }


def mean_likert(rows: Iterable[tuple[str, int, Sequence[str]]]) -> dict[str, tuple[float, int]]:
    """Per model, the mean 1–7 Likert score and how many outputs it averages (InstructGPT Fig. 4)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [sum, count]
    for model, likert, _flags in rows:
        totals[model][0] += likert
        totals[model][1] += 1
    return {model: (total / n, n) for model, (total, n) in totals.items()}


# --- labeler agreement ----------------------------------------------------------------------

# One ranked output: (task id, labeler id, completion id, rank), rank 1 the best, ties allowed.
RankRow = tuple[int, int, int, int]


@dataclass(frozen=True)
class Agreement:
    overall: float | None  # agreed / compared over every labeler pair; None when nothing compared
    comparisons: int  # completion pairs compared, summed over the labeler pairs of every task
    pairs: dict[tuple[int, int], float]  # per labeler pair (a < b): their agreement
    per_labeler: dict[int, float]  # per labeler: their agreement with everybody else
    # per labeler pair (a < b): how many completion pairs both ordered (what `pairs` rests on)
    pair_comparisons: dict[tuple[int, int], int] = field(default_factory=dict)


def preferences(ranks: Mapping[int, int]) -> dict[tuple[int, int], int]:
    """For each unordered completion pair (a<b): +1 if a ranked better, -1 if b, ties omitted."""
    out = {}
    for a, b in combinations(sorted(ranks), 2):
        if ranks[a] != ranks[b]:
            out[(a, b)] = 1 if ranks[a] < ranks[b] else -1
    return out


def pairwise_agreement(rows: Iterable[RankRow]) -> Agreement:
    """Pairwise agreement of labelers on shared ranking tasks (InstructGPT reports 72.6 ± 1.5%
    among its training labelers: Ouyang et al. 2022, §3.4, https://arxiv.org/abs/2203.02155).

    For two labelers who ranked the same task, every completion pair both ordered strictly counts
    once: agreed if they put it the same way round; a pair either of them tied is left out. The
    counts are pooled over tasks (a task with more shared pairs weighs more), overall, per
    labeler pair and per labeler (a labeler's agreement with everybody else).
    """
    by_task: dict[int, dict[int, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for task_id, labeler_id, completion_id, rank in rows:
        by_task[task_id][labeler_id][completion_id] = rank
    pair_tot: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])  # [agreed, compared]
    per_labeler: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    agreed = total = 0
    for labelers in by_task.values():
        if len(labelers) < 2:
            continue
        prefs = {lab: preferences(r) for lab, r in labelers.items()}
        for a, b in combinations(sorted(prefs), 2):
            shared = prefs[a].keys() & prefs[b].keys()
            same = sum(1 for p in shared if prefs[a][p] == prefs[b][p])
            pair_tot[(a, b)][0] += same
            pair_tot[(a, b)][1] += len(shared)
            for lab in (a, b):
                per_labeler[lab][0] += same
                per_labeler[lab][1] += len(shared)
            agreed += same
            total += len(shared)
    return Agreement(
        overall=agreed / total if total else None,
        comparisons=total,
        pairs={k: v[0] / v[1] for k, v in pair_tot.items() if v[1]},
        per_labeler={k: v[0] / v[1] for k, v in per_labeler.items() if v[1]},
        pair_comparisons={k: v[1] for k, v in pair_tot.items() if v[1]},
    )


def agreement_from_pair_counts(rows: Iterable[tuple[int, int, int, int]]) -> Agreement:
    """pairwise_agreement's result from its counts per labeler pair: (labeler a, labeler b,
    completion pairs they ordered alike, completion pairs both ordered strictly), a < b, as the
    database counts them (labeling/sql/statements.AGREEMENT_PAIRS)."""
    pairs: dict[tuple[int, int], float] = {}
    pair_comparisons: dict[tuple[int, int], int] = {}
    per_labeler: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # [agreed, compared]
    agreed = total = 0
    for a, b, same, shared in rows:
        same, shared = int(same), int(shared)
        if not shared:
            continue
        pairs[(a, b)] = same / shared
        pair_comparisons[(a, b)] = shared
        for labeler in (a, b):
            per_labeler[labeler][0] += same
            per_labeler[labeler][1] += shared
        agreed += same
        total += shared
    return Agreement(
        overall=agreed / total if total else None,
        comparisons=total,
        pairs=pairs,
        per_labeler={k: v[0] / v[1] for k, v in per_labeler.items()},
        pair_comparisons=pair_comparisons,
    )


# --- a proportion and its interval (reward-model accuracy) -----------------------------------

Z95 = NormalDist().inv_cdf(0.975)  # 1.95996: the two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (95% by default).

    Wilson (1927), recommended over the textbook p ± z·sqrt(p(1−p)/n) by Brown, Cai & DasGupta
    (2001, https://doi.org/10.1214/ss/1009213286): that one has far below its nominal coverage
    at small n, and collapses to a point at 0 or n successes. With p = successes/n:
    centre = (p + z²/2n) / (1 + z²/n), half width = z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n).
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1 trials, not {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n = {n}, not {successes}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def trials_to_tell_apart(
    p1: float = 0.6, p0: float = 0.5, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Trials a two-sided level-`alpha` test needs to tell a true proportion `p1` from `p0` with
    probability `power` (the normal approximation for one proportion; Fleiss, Levin & Paik,
    "Statistical Methods for Rates and Proportions", 3rd ed., §2.5):

        n = ( z(1−α/2)·sqrt(p0(1−p0)) + z(power)·sqrt(p1(1−p1)) )² / (p1 − p0)²

    For a reward model at 60% against chance (50%), α = 0.05 and 80% power:
    (1.95996·0.5 + 0.84162·0.48990)² / 0.1² = (0.97998 + 0.41231)² / 0.01 = 193.85, so 194
    pairs. Fewer, and an interval around 60% is likely to still hold 50%.
    """
    normal = NormalDist()
    spread = normal.inv_cdf(1 - alpha / 2) * math.sqrt(p0 * (1 - p0)) + normal.inv_cdf(
        power
    ) * math.sqrt(p1 * (1 - p1))
    return math.ceil((spread / (p1 - p0)) ** 2)


# Held-out pairs a reward model's accuracy needs before 60% can be told from 50% (194).
PAIRS_TO_TELL_60_FROM_50 = trials_to_tell_apart(0.6, 0.5)


@dataclass(frozen=True)
class HeldOutAccuracy:
    """A reward model's pair accuracy on held-out rankings, with its 95% Wilson interval.

    `pairs` counts the untied completion pairs it is computed on. Pairs from one ranking share
    their completions and labeler, so they are not independent: the interval treats them as if
    they were, and is at best this narrow; `rankings` says how many rankings they came from.
    """

    accuracy: float
    pairs: int
    rankings: int | None  # None when the run did not record it
    low: float
    high: float

    @property
    def excludes_chance(self) -> bool:
        """The interval lies wholly above (or below) 50%."""
        return self.low > 0.5 or self.high < 0.5

    @property
    def pairs_needed(self) -> int:
        """Pairs that tell a 60% reward model from a coin at 95% / 80% power (194)."""
        return PAIRS_TO_TELL_60_FROM_50

    @property
    def enough_pairs(self) -> bool:
        return self.pairs >= self.pairs_needed


def held_out_accuracy(
    accuracy: float, *, pairs: int, rankings: int | None = None
) -> HeldOutAccuracy | None:
    """The record of an accuracy measured on `pairs` pairs (None when there were none). The
    correct count is recovered from the logged rate: accuracy · pairs, rounded."""
    if pairs <= 0:
        return None
    correct = min(pairs, max(0, round(accuracy * pairs)))
    low, high = wilson_interval(correct, pairs)
    return HeldOutAccuracy(accuracy, pairs, rankings, low, high)


def within_prompt_agreement(
    groups: Iterable[Sequence[tuple[float, float]]], *, tie_eps: float = 1e-9
) -> HeldOutAccuracy | None:
    """How often a scorer orders two answers to the same prompt as a reference does: `groups`
    holds, per prompt, (score, reference) of each answer. Every pair of a prompt's answers whose
    references differ by more than `tie_eps` counts; the scorer agrees when its scores differ
    in the same direction (a scorer tie is a miss). The proportion comes with its Wilson
    interval; `rankings` is the number of prompts that gave a pair.

    This is the reward model's agreement with a gold judge issue 14 asks for: across prompts a
    reward model may just prefer easy prompts, which says nothing about the choice RL makes
    between answers to one prompt."""
    agree = pairs = prompts = 0
    for group in groups:
        counted = 0
        for (score_x, ref_x), (score_y, ref_y) in combinations(group, 2):
            if abs(ref_x - ref_y) <= tie_eps:
                continue
            counted += 1
            agree += (score_x - score_y) * (ref_x - ref_y) > 0
        pairs += counted
        prompts += counted > 0
    if pairs == 0:
        return None
    low, high = wilson_interval(agree, pairs)
    return HeldOutAccuracy(agree / pairs, pairs, prompts, low, high)


# --- the same figures from counts (the reviewer dashboard at scale) --------------------------
#
# At 10^6 judgements the record-based functions above are too slow to run per page (a pick
# matrix of n_boot × prompts, a refit over every comparison per resample). Every figure they
# compute depends on the judgements only through a few counts, which the database can group:
# the functions below take those counts and give the same point estimates, and intervals from the
# same bootstrap distribution (different draws). The record-based functions stay the reference
# the parity tests (tests/labeling/test_stats_counts.py) pin these to.

# (score of `model` in half points: 2 per win, 1 per tie; judgements; prompts with exactly these)
Cluster = tuple[int, int, int]


def win_rate_clusters(
    comparisons: Iterable[PairVerdict], *, model: str, baseline: str
) -> list[Cluster]:
    """The prompt clusters of `model` against `baseline` as signatures (score in half points,
    judgements, how many prompts share both): what `win_rate_from_counts` needs of the records."""
    per_prompt: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for c in comparisons:
        if (c.model_a, c.model_b) == (model, baseline):
            half = round(2 * c.score_a)
        elif (c.model_a, c.model_b) == (baseline, model):
            half = 2 - round(2 * c.score_a)
        else:
            continue
        per_prompt[c.prompt_id][0] += half
        per_prompt[c.prompt_id][1] += 1
    signatures: dict[tuple[int, int], int] = defaultdict(int)
    for half, n in per_prompt.values():
        signatures[(half, n)] += 1
    return [(half, n, prompts) for (half, n), prompts in sorted(signatures.items())]


def win_rate_from_counts(
    *,
    model: str,
    baseline: str,
    wins: int,
    losses: int,
    ties: int,
    clusters: Sequence[Cluster],
    n_boot: int = 1000,
    seed: int = 0,
) -> WinRate:
    """`win_rate` from counts: the same rate, and an interval from the same bootstrap.

    Prompts with the same (score, judgements) signature are exchangeable in the prompt-clustered
    bootstrap, so drawing P prompts with replacement is the same, in distribution, as drawing
    how many prompts of each signature were picked: multinomial(P, share of each signature).
    One draw costs O(signatures), not O(prompts), and signatures are few (judgements per prompt
    are few).
    """
    n = wins + losses + ties
    if n == 0:
        return WinRate(model, baseline, 0, 0, 0, 0, None, None, None)
    halves, counts, prompts = np.array(clusters, dtype=float).reshape(-1, 3).T  # (signatures,)
    rng = np.random.default_rng(seed)
    picked = rng.multinomial(int(prompts.sum()), prompts / prompts.sum(), size=n_boot)
    boot_rates = (picked @ halves) / 2 / (picked @ counts)  # (boot,)
    low, high = np.percentile(boot_rates, [2.5, 97.5])
    rate = (wins + ties / 2) / n
    return WinRate(model, baseline, n, wins, losses, ties, rate, float(low), float(high))


@dataclass(frozen=True)
class VerdictCount:
    """Judgements of one ordered model pair with one outcome score (and, for length control, one
    bin of normalised length difference d = (len_a − len_b)/(len_a + len_b)): how many, and the
    sum of d and of d² over them."""

    model_a: str
    model_b: str
    score_a: float  # 1, 0 or 1/2, as PairVerdict.score_a
    count: int
    diff_sum: float = 0.0
    diff_sq_sum: float = 0.0


def length_diff(len_a: int, len_b: int) -> float:
    """(len_a − len_b)/(len_a + len_b), 0 for two empty answers (as bradley_terry computes it)."""
    total = len_a + len_b
    return (len_a - len_b) / total if total > 0 else 0.0


def verdict_counts(
    comparisons: Iterable[PairVerdict], *, bins_per_unit: int | None = None
) -> list[VerdictCount]:
    """The records grouped as the database groups them (training/review.py): per ordered pair,
    outcome score and length bin round(d · bins_per_unit); every distinct d its own group when
    `bins_per_unit` is None (then the length-controlled fit is exact)."""
    groups: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for c in comparisons:
        d = length_diff(c.len_a, c.len_b)
        key = d if bins_per_unit is None else round(d * bins_per_unit)
        group = groups[(c.model_a, c.model_b, c.score_a, key)]
        group[0] += 1
        group[1] += d
        group[2] += d * d
    return [
        VerdictCount(a, b, score, int(n), total, squares)
        for (a, b, score, _), (n, total, squares) in groups.items()
    ]


@dataclass(frozen=True)
class RatingDraws:
    """Bradley–Terry ratings before anchoring: the fit and its bootstrap refits (Elo scale, any
    shift), so that a page can anchor them on whichever model the reviewer picks."""

    models: list[str]
    point: list[float]  # (models,)
    boot: list[list[float]]  # (boot, models)
    n: list[int]  # (models,): comparisons each model took part in


def bradley_terry_draws(
    groups: Sequence[VerdictCount],
    *,
    n_boot: int = 200,
    seed: int = 0,
    length_controlled: bool = False,
    rtol: float = 1e-8,
) -> RatingDraws:
    """`bradley_terry`'s fit and bootstrap from counts: one weighted row per group.

    The loss of a group of w identical rows is w times the loss of one, so the weighted fit is
    the plain fit. Resampling N comparisons with replacement draws multinomial(N, w/N) group
    weights (exact in distribution). Each refit starts from the point fit (a resample's optimum
    is close to it) and stops when a Newton step is below `rtol` relative to the coefficients.
    For length control a group's covariate is its mean d; with binned groups that is within
    half a bin of each member's d (tests/labeling/test_stats_counts.py states the tolerance).
    """
    groups = [g for g in groups if g.count > 0]
    models = sorted({g.model_a for g in groups} | {g.model_b for g in groups})
    if not groups:
        return RatingDraws([], [], [], [])
    column = {m: i for i, m in enumerate(models)}
    rows = np.arange(len(groups))
    weights = np.array([g.count for g in groups], dtype=float)  # (groups,)
    features = np.zeros((len(groups), len(models)))  # (groups, models)
    features[rows, [column[g.model_a] for g in groups]] += math.log(BASE)
    features[rows, [column[g.model_b] for g in groups]] -= math.log(BASE)
    if length_controlled:
        total = weights.sum()
        diff_sums = np.array([g.diff_sum for g in groups])
        mean = diff_sums.sum() / total
        squares = sum(g.diff_sq_sum for g in groups) / total
        variance = squares - mean * mean
        covariate = diff_sums / weights  # (groups,)
        # bradley_terry divides by the spread (np.std) of every comparison's d; the same here.
        # A spread within rounding of zero (every d the same) is zero, as there.
        if variance > 1e-12 * squares:
            covariate = covariate / math.sqrt(variance)
        features = np.column_stack([features, covariate])  # (groups, models + 1)
    targets = np.array([g.score_a for g in groups])  # (groups,)

    point_coefs = _fit_weighted_logistic(features, targets, weights, l2=L2, rtol=1e-12)
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(int(weights.sum()), weights / weights.sum(), size=n_boot)
    boot = [
        SCALE
        * _fit_weighted_logistic(
            features, targets, draw.astype(float), l2=L2, init=point_coefs, rtol=rtol
        )[: len(models)]
        for draw in resampled
    ]
    n_per_model = dict.fromkeys(models, 0)
    for g in groups:
        n_per_model[g.model_a] += g.count
        if g.model_b != g.model_a:
            n_per_model[g.model_b] += g.count
    return RatingDraws(
        models=models,
        point=[float(x) for x in SCALE * point_coefs[: len(models)]],
        boot=[[float(x) for x in b] for b in boot],
        n=[n_per_model[m] for m in models],
    )


def ratings_anchored(draws: RatingDraws, *, anchor: str | None = None) -> list[Rating]:
    """The ratings of `draws` shifted so `anchor` is 1000 (the mean when None), each bootstrap
    draw re-anchored before its percentiles are taken, as `bradley_terry` does; best first."""
    if not draws.models:
        return []
    if anchor is not None and anchor not in draws.models:
        raise ValueError(f"anchor {anchor!r} is not among the compared models")
    point = np.array(draws.point)  # (models,)
    boot = np.array(draws.boot).reshape(-1, len(draws.models))  # (boot, models)

    def anchored(ratings: np.ndarray) -> np.ndarray:
        if anchor is not None:
            shift = ratings[..., draws.models.index(anchor)]
        else:
            shift = ratings.mean(axis=-1)
        return ratings - np.expand_dims(shift, -1) + INIT_RATING

    point = anchored(point)
    if len(boot):
        low, high = np.percentile(anchored(boot), [2.5, 97.5], axis=0)
    else:
        low, high = point, point
    ratings = [
        Rating(m, float(point[i]), float(low[i]), float(high[i]), draws.n[i])
        for i, m in enumerate(draws.models)
    ]
    return sorted(ratings, key=lambda r: -r.rating)


def _fit_weighted_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    l2: float,
    init: np.ndarray | None = None,
    rtol: float = 1e-8,
    max_iter: int = 100,
) -> np.ndarray:
    """`_fit_logistic` with a weight per row, a starting point, and a relative stopping test.

    The absolute test of `_fit_logistic` (a step below 1e-10) is fine for a few thousand rows;
    with 10^6 comparisons the objective is ~10^6 and its rounding (~1e-10 relative) makes the
    line search reject every step near the optimum, so it halves down to the floor and runs to
    max_iter. Here a step is accepted when it does not raise the objective by more than its
    rounding, and the loop stops when a step is small against the coefficients.
    """

    def objective(coefs: np.ndarray) -> float:
        logits = features @ coefs
        losses = np.logaddexp(0.0, logits) - targets * logits
        return float(weights @ losses + l2 / 2 * coefs @ coefs)

    coefs = np.zeros(features.shape[1]) if init is None else init.copy()
    eye = np.eye(features.shape[1])
    for _ in range(max_iter):
        probs = 0.5 * (1.0 + np.tanh(features @ coefs / 2))  # sigmoid without overflow
        gradient = features.T @ (weights * (probs - targets)) + l2 * coefs
        hessian = (features.T * (weights * probs * (1.0 - probs))) @ features + l2 * eye
        step = np.linalg.solve(hessian, gradient)
        current, size = objective(coefs), 1.0
        slack = 1e-12 * max(abs(current), 1.0)
        while objective(coefs - size * step) > current + slack and size > 1e-10:
            size /= 2
        coefs = coefs - size * step
        if np.max(np.abs(size * step)) <= rtol * max(1.0, float(np.max(np.abs(coefs)))):
            break
    return coefs


def metadata_rates_from_counts(
    outputs: Mapping[str, int],
    flagged: Mapping[str, Mapping[str, int]],
    *,
    flags: Sequence[str] = (),
) -> dict[str, dict[str, float]]:
    """`metadata_rates` from counts: rated outputs per model, and per model and flag how many of
    them carry it (each output once, however often the flag is repeated in it)."""
    all_flags = set(flags) | {f for per_model in flagged.values() for f in per_model}
    return {
        model: {flag: flagged.get(model, {}).get(flag, 0) / n for flag in sorted(all_flags)}
        for model, n in outputs.items()
        if n
    }


def mean_likert_from_counts(totals: Mapping[str, tuple[int, int]]) -> dict[str, tuple[float, int]]:
    """`mean_likert` from each model's (sum of Likert scores, outputs rated)."""
    return {model: (total / n, n) for model, (total, n) in totals.items() if n}
