"""A crowd of simulated labelers: how each one judges, and the calibration of their noise.

Each `SimulatedLabeler` judges outputs with its task suite's gold judge (`training.demo.suites`;
the "demo" suite, families.py, by default) plus its own Gaussian noise, so two labelers disagree
on close calls the way people do. `make_crowd` picks the noise so that the crowd's pairwise
agreement on ranking pairs lands near a target; InstructGPT reports 72.6% among its labelers
(Ouyang et al. 2022, section 5.1 / appendix B.5), hence the 0.73 default.
`training.demo.http_crowd.run_crowd` puts such a crowd to work over the HTTP API.

Plain Python (+ numpy for the calibration); no Django, no torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import NamedTuple

import numpy as np

from labeling import stats
from training.demo import suites

FAILS_TO_FOLLOW = "fails_to_follow"
# Below this (perceived) quality the judge flags "fails to follow"; a comparison where both
# sides look this bad is "both_bad".
BAD_QUALITY = 0.3


class Entry(NamedTuple):
    """One output's place in a simulated ranking: rank 1 is best, equal ranks are ties."""

    rank: int
    likert: int
    flags: frozenset[str]


@dataclass(frozen=True)
class SimulatedLabeler:
    name: str
    noise: float  # std of the N(0, noise) added to the judge's quality of every output read
    skill: float  # probability that a demonstration is the gold answer, not a degraded one
    skip_rate: float  # probability of skipping any task offered
    tie_eps: float = 0.02  # outputs whose perceived qualities differ by less are tied
    suite: str = "demo"  # the task suite (training.demo.suites) whose judge and answers it uses

    @property
    def tasks(self) -> suites.Suite:
        return suites.suite(self.suite)

    def perceive(self, prompt_text: str, text: str, rng: random.Random) -> float:
        return self.tasks.judge(prompt_text, text).quality + rng.gauss(0.0, self.noise)

    def skips(self, rng: random.Random) -> bool:
        return rng.random() < self.skip_rate

    def write_demonstration(self, prompt_text: str, rng: random.Random) -> str:
        """The gold answer, or (with probability 1 - skill) a wrong, partial or rambling one."""
        try:
            gold = self.tasks.gold_response(prompt_text)
        except ValueError:  # off the suite: a plain, on-topic answer is the best we know
            gold = f"Here is a short, clear answer to: {prompt_text.strip()}"
        if rng.random() < self.skill:
            return gold
        seed = rng.randrange(2**31)
        if rng.random() < 0.5:
            return f"{gold} {self.tasks.filler_sentence(seed=seed)}"
        try:
            return self.tasks.flawed_response(prompt_text, seed=seed)
        except ValueError:
            return self.tasks.filler_sentence(seed=seed)

    def rank(self, prompt_text: str, completions: Sequence[str], rng: random.Random) -> list[Entry]:
        """One Entry per completion, in the order given: ranks by perceived quality, with ties.

        Outputs sorted by perceived quality are tied while each is within tie_eps of the one
        before it; ranks are "1224" style (a tie shares the better rank, the next skips).
        """
        judged = [self.tasks.judge(prompt_text, text) for text in completions]
        perceived = [j.quality + rng.gauss(0.0, self.noise) for j in judged]
        order = sorted(range(len(completions)), key=lambda i: -perceived[i])
        ranks = [0] * len(completions)
        for place, i in enumerate(order):
            previous = order[place - 1] if place else None
            tied = previous is not None and perceived[previous] - perceived[i] < self.tie_eps
            ranks[i] = ranks[previous] if tied else place + 1
        return [
            Entry(
                rank=ranks[i],
                likert=min(7, max(1, 1 + round(6 * perceived[i]))),
                flags=self._flags(judged[i].flags, perceived[i], rng),
            )
            for i in range(len(completions))
        ]

    def compare(self, prompt_text: str, a: str, b: str, rng: random.Random) -> str:
        """ "a", "b", "tie" (within tie_eps) or "both_bad" (both look below BAD_QUALITY)."""
        quality_a = self.perceive(prompt_text, a, rng)
        quality_b = self.perceive(prompt_text, b, rng)
        if max(quality_a, quality_b) < BAD_QUALITY:
            return "both_bad"
        if abs(quality_a - quality_b) < self.tie_eps:
            return "tie"
        return "a" if quality_a > quality_b else "b"

    def time_spent_ms(self, kind: str, k: int, rng: random.Random) -> int:
        """What the task would have taken a person (reported, never slept): lognormal."""
        median_s = {"demonstration": 120.0, "ranking": 25.0 * k, "comparison": 30.0}[kind]
        return int(1000 * median_s * rng.lognormvariate(0.0, 0.5))

    def _flags(
        self, judged: frozenset[str], perceived: float, rng: random.Random
    ) -> frozenset[str]:
        # A noisier labeler misses more of the judge's flags; "fails to follow" follows the
        # judge's own rule applied to what this labeler perceived.
        miss = min(0.5, self.noise)
        kept = {flag for flag in judged - {FAILS_TO_FOLLOW} if rng.random() >= miss}
        if perceived < BAD_QUALITY:
            kept.add(FAILS_TO_FOLLOW)
        return frozenset(kept)


# --- calibration ----------------------------------------------------------------------------


def synthetic_completions(
    prompt_text: str, k: int, rng: random.Random, *, suite: str = "demo"
) -> list[str]:
    """K distinct outputs for a prompt of the suite, spread in quality like a model's samples would be.

    Candidates are the gold answer, several flawed ones, gold plus an unrelated sentence and an
    unrelated sentence alone; outputs of distinct judge quality are preferred, so that few pairs
    are exact ties (no labeler, however careful, agrees with another on a coin flip).
    """
    tasks = suites.suite(suite)
    gold = tasks.gold_response(prompt_text)
    candidates = [gold, f"{gold} {tasks.filler_sentence(seed=rng.randrange(2**31))}"]
    candidates += [
        tasks.flawed_response(prompt_text, seed=rng.randrange(2**31)) for _ in range(k + 3)
    ]
    candidates.append(tasks.filler_sentence(seed=rng.randrange(2**31)))
    candidates = list(dict.fromkeys(candidates))
    rng.shuffle(candidates)
    chosen: list[str] = []
    qualities: set[float] = set()
    for text in candidates:
        quality = tasks.judge(prompt_text, text).quality
        if quality not in qualities and len(chosen) < k:
            chosen.append(text)
            qualities.add(quality)
    chosen += [text for text in candidates if text not in chosen][: k - len(chosen)]
    if len(chosen) < k:
        raise ValueError(f"only {len(chosen)} distinct outputs for {prompt_text!r}")
    return chosen


def synthetic_rankings(
    n: int, *, k: int = 4, seed: int, suite: str = "demo"
) -> list[tuple[str, list[str]]]:
    """`n` (prompt, K completions) items over the prompt families of the suite."""
    rng = random.Random(seed)
    return [
        (p, synthetic_completions(p, k, rng, suite=suite))
        for p in suites.suite(suite).sample_prompts(n, seed=seed)
    ]


def quality_gaps(
    rankings: Sequence[tuple[str, Sequence[str]]], *, suite: str = "demo"
) -> np.ndarray:
    """Judge quality differences q_x - q_y over every output pair of every ranking."""
    judge = suites.suite(suite).judge
    gaps = []
    for prompt_text, completions in rankings:
        qualities = [judge(prompt_text, text).quality for text in completions]
        gaps += [a - b for a, b in combinations(qualities, 2)]
    return np.asarray(gaps, dtype=float)


def expected_agreement(noises: Sequence[float], gaps: np.ndarray, *, tie_eps: float) -> float:
    """The crowd's expected pairwise agreement, pooled as labeling.selectors.labeler_agreement.

    For a pair with judge gap d, labeler i perceives d + N(0, 2 noise_i^2) and orders it
    "x first" when that is >= tie_eps, "y first" when <= -tie_eps, and ties otherwise (ties
    are left out of agreement). Two labelers agree with probability p+_i p+_j + p-_i p-_j, out of
    (p+_i + p-_i)(p+_j + p-_j) pairs both ordered strictly; both sums run over all labeler pairs
    and all gaps, which is how the selector pools. Exact in the noise; the gaps are the sample.
    (Ties chained inside one ranking, a rarer event, are ignored.)
    """
    if len(noises) < 2:  # one labeler: the agreement two of its kind would have
        noises = list(noises) * 2
    scale = np.maximum(np.asarray(noises, dtype=float), 1e-6)[:, None] * math.sqrt(2.0)
    erf = np.vectorize(math.erf)

    def phi(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))

    ahead = phi((gaps[None, :] - tie_eps) / scale)  # (labelers, gaps)
    behind = phi((-gaps[None, :] - tie_eps) / scale)
    strict = ahead + behind

    def pair_sum(x: np.ndarray, y: np.ndarray) -> float:
        # sum over labelers i < j and gaps of x_i * y_j, for symmetric products (x == y here)
        return float(((x.sum(0) * y.sum(0)) - (x * y).sum(0)).sum() / 2.0)

    agreed = pair_sum(ahead, ahead) + pair_sum(behind, behind)
    total = pair_sum(strict, strict)
    return agreed / total if total else 0.5


def calibrate_noise(
    agreement: float, multipliers: Sequence[float], gaps: np.ndarray, *, tie_eps: float
) -> float:
    """The noise scale s such that labelers with noise s * multiplier agree `agreement` of pairs.

    Agreement falls as noise grows, so bisect on log s. A target above what near-noiseless
    labelers reach on these gaps (equal-quality pairs are coin flips) gets the smallest noise.
    """
    if not 0.5 < agreement < 1.0:
        raise ValueError(f"agreement must be between 0.5 and 1 (exclusive); got {agreement}")
    low, high = math.log(1e-3), math.log(3.0)
    for _ in range(40):
        mid = (low + high) / 2
        noises = [math.exp(mid) * m for m in multipliers]
        if expected_agreement(noises, gaps, tie_eps=tie_eps) > agreement:
            low = mid
        else:
            high = mid
    return math.exp((low + high) / 2)


def make_crowd(
    n: int,
    *,
    agreement: float = 0.73,
    seed: int,
    rankings: Sequence[tuple[str, Sequence[str]]] | None = None,
    spread: float = 0.4,
    skill: tuple[float, float] = (0.6, 0.95),
    skip_rate: tuple[float, float] = (0.0, 0.04),
    tie_eps: float = 0.02,
    suite: str = "demo",
) -> list[SimulatedLabeler]:
    """`n` labelers of the suite `suite` whose expected pairwise agreement on ranking pairs
    is `agreement`.

    Labelers differ: noise = scale * m with m uniform in [1 - spread, 1 + spread], skill and
    skip rate uniform in their ranges. The common scale is calibrated on `rankings`
    ((prompt, completions) items like the ones the crowd will rank), by default 300 synthetic
    rankings of K=4 over the suite's prompt families.
    """
    if n < 1:
        raise ValueError("a crowd needs at least one labeler")
    suites.suite(suite)  # an unknown suite fails here, not in the first labeler's first task
    rng = random.Random(seed)
    multipliers = [rng.uniform(1 - spread, 1 + spread) for _ in range(n)]
    if rankings is None:
        rankings = synthetic_rankings(300, k=4, seed=seed, suite=suite)
    gaps = quality_gaps(rankings, suite=suite)
    scale = calibrate_noise(agreement, multipliers, gaps, tie_eps=tie_eps)
    return [
        SimulatedLabeler(
            name=f"sim-labeler-{i + 1}",
            noise=scale * multipliers[i],
            skill=rng.uniform(*skill),
            skip_rate=rng.uniform(*skip_rate),
            tie_eps=tie_eps,
            suite=suite,
        )
        for i in range(n)
    ]


def measured_agreement(rankings_by_labeler: dict[str, dict[int, list[int]]]) -> float | None:
    """Pooled pairwise agreement of {labeler: {item: ranks}}, as the platform counts it
    (labeling.stats.pairwise_agreement: item = task, position in `ranks` = completion)."""
    rows = [
        (item, labeler, position, rank)
        for labeler, (_, by_item) in enumerate(sorted(rankings_by_labeler.items()))
        for item, ranks in by_item.items()
        for position, rank in enumerate(ranks)
    ]
    return stats.pairwise_agreement(rows).overall


def gold_win_rate(
    prompts: Sequence[str],
    new: Sequence[Sequence[str]],
    old: Sequence[Sequence[str]],
    *,
    suite: str = "demo",
) -> stats.WinRate:
    """Win rate of the `new` answers over the `old` by the suite's gold judge (its quality; equal
    qualities tie), with its bootstrap interval over prompts. `new[j][i]` and `old[j][i]` are the
    j-th answers of each model to prompts[i]."""
    judge = suites.suite(suite).judge
    records = []
    for new_row, old_row in zip(new, old, strict=True):
        for i, (prompt, a, b) in enumerate(zip(prompts, new_row, old_row, strict=True)):
            qa, qb = judge(prompt, a).quality, judge(prompt, b).quality
            winner = "tie" if abs(qa - qb) < 1e-9 else ("a" if qa > qb else "b")
            records.append(stats.PairVerdict("new", "old", winner, len(a), len(b), i, 0))
    return stats.win_rate(records, model="new", baseline="old", n_boot=2000)
