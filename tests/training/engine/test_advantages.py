"""Critic-free advantages against hand-computed values and plain-loop references."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from training.engine.advantages import (
    critic_free_advantages,
    grpo_advantages,
    kl_in_score,
    last_token_mask,
    penalised_scores,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
    sequence_to_tokens,
)


def test_grpo_subtracts_the_group_mean_and_divides_by_the_group_std():
    # Group [1, 2, 3]: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1].
    # Group [0, 4, 8]: mean 4, unbiased std sqrt((16 + 0 + 16) / 2) = 4 -> [-1, 0, 1].
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 8.0])
    advantages = grpo_advantages(rewards, 3, eps=0.0)
    assert advantages.tolist() == pytest.approx([-1, 0, 1, -1, 0, 1])


def test_grpo_uses_the_unbiased_std_as_trl_does():
    # [0, 1]: mean 0.5; unbiased std sqrt((0.25 + 0.25) / 1) = 1/sqrt(2), so +-0.5 * sqrt(2);
    # the population std (0.5) would give +-1.
    advantages = grpo_advantages(torch.tensor([0.0, 1.0]), 2, eps=0.0)
    assert advantages.tolist() == pytest.approx([-0.5 * math.sqrt(2), 0.5 * math.sqrt(2)])


def test_grpo_adds_eps_to_the_std():
    # [1, 2, 3]: std 1, so the advantages are [-1, 0, 1] / (1 + 0.5).
    advantages = grpo_advantages(torch.tensor([1.0, 2.0, 3.0]), 3, eps=0.5)
    assert advantages.tolist() == pytest.approx([-2 / 3, 0, 2 / 3])


def test_grpo_without_scale_only_subtracts_the_group_mean():
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 8.0])
    advantages = grpo_advantages(rewards, 3, scale=False)
    assert advantages.tolist() == pytest.approx([-1, 0, 1, -4, 0, 4])


def test_grpo_matches_a_plain_python_loop():
    rewards = torch.randn(12, generator=torch.Generator().manual_seed(0))
    expected = []
    for start in range(0, 12, 4):
        group = rewards[start : start + 4].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)  # stdev is unbiased
        expected += [(r - mean) / (std + 1e-4) for r in group]
    assert grpo_advantages(rewards, 4).tolist() == pytest.approx(expected, abs=1e-6)


def test_rloo_subtracts_the_mean_of_the_other_rewards_of_the_group():
    # [1, 2, 3, 6], sum 12: 1 - 11/3 = -8/3, 2 - 10/3 = -4/3, 3 - 9/3 = 0, 6 - 6/3 = 4.
    advantages = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4)
    assert advantages.tolist() == pytest.approx([-8 / 3, -4 / 3, 0, 4])


def test_rloo_matches_a_plain_python_loop():
    rewards = torch.randn(9, generator=torch.Generator().manual_seed(1))
    expected = []
    for start in range(0, 9, 3):
        group = rewards[start : start + 3].tolist()
        for i, r in enumerate(group):
            others = group[:i] + group[i + 1 :]
            expected.append(r - sum(others) / len(others))
    assert rloo_advantages(rewards, 3).tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("advantages_of", [grpo_advantages, rloo_advantages])
def test_a_group_of_identical_rewards_gets_advantage_zero_not_nan(advantages_of):
    advantages = advantages_of(torch.tensor([5.0, 5.0, 5.0, 1.0, 2.0, 3.0]), 3)
    assert advantages[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(advantages).all()


@pytest.mark.parametrize("advantages_of", [grpo_advantages, rloo_advantages])
def test_a_group_size_that_does_not_divide_the_batch_is_refused(advantages_of):
    with pytest.raises(ValueError, match="not whole groups of group_size=4"):
        advantages_of(torch.zeros(6), 4)


@pytest.mark.parametrize("advantages_of", [grpo_advantages, rloo_advantages])
def test_a_group_of_one_is_refused(advantages_of):
    with pytest.raises(ValueError, match="at least 2"):
        advantages_of(torch.zeros(3), 1)


def test_sequence_advantages_are_broadcast_to_response_tokens_only():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per_token = sequence_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert per_token.tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]


def test_last_token_mask_marks_the_end_of_each_response():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    assert last_token_mask(mask).int().tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_reinforce_pp_baseline_by_hand():
    # Rewards [3, 1] in one group of 2: centred [1, -1].
    # Token rewards -0.1 * kl, plus the centred reward on the last response token:
    #   row 0 (3 tokens): [-0.05, 0, -0.1 + 1] = [-0.05, 0, 0.9]
    #   row 1 (2 tokens): [-0.1, -0.2 - 1]     = [-0.1, -1.2]   (kl 9 under pad is ignored)
    # Returns (sum from t on): row 0 [0.85, 0.9, 0.9], row 1 [-1.3, -1.2].
    # Over the 5 tokens: mean 0.15 / 5 = 0.03; deviations 0.82, 0.87, 0.87, -1.33, -1.23;
    # squares sum 0.6724 + 0.7569 + 0.7569 + 1.7689 + 1.5129 = 5.468, population variance / 5.
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = torch.tensor([[0.5, 0.0, 1.0], [1.0, 2.0, 9.0]])
    advantages = reinforce_pp_baseline_advantages(torch.tensor([3.0, 1.0]), 2, mask, kl, 0.1)
    std = math.sqrt(5.468 / 5)
    assert advantages.tolist() == [
        pytest.approx([0.82 / std, 0.87 / std, 0.87 / std], abs=1e-5),
        pytest.approx([-1.33 / std, -1.23 / std, 0.0], abs=1e-5),
    ]


def test_reinforce_pp_baseline_matches_a_plain_python_loop():
    generator = torch.Generator().manual_seed(2)
    batch, steps, kl_coef = 6, 5, 0.05
    rewards = torch.randn(batch, generator=generator)
    kl = torch.randn(batch, steps, generator=generator)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator).tolist()
    mask = torch.tensor([[int(t < n) for t in range(steps)] for n in lengths])

    returns: list[list[float | None]] = []
    for row in range(batch):
        group = rewards[row - row % 3 : row - row % 3 + 3].tolist()
        centred = rewards[row].item() - sum(group) / 3
        running = 0.0
        row_returns: list[float | None] = [None] * steps
        for t in reversed(range(lengths[row])):
            running += -kl_coef * kl[row, t].item() + (centred if t == lengths[row] - 1 else 0.0)
            row_returns[t] = running
        returns.append(row_returns)
    real = [r for row_returns in returns for r in row_returns if r is not None]
    mean, std = statistics.mean(real), math.sqrt(statistics.pvariance(real))
    expected = [[0.0 if r is None else (r - mean) / std for r in row] for row in returns]

    advantages = reinforce_pp_baseline_advantages(rewards, 3, mask, kl, kl_coef)
    for row in range(batch):
        assert advantages[row].tolist() == pytest.approx(expected[row], abs=1e-5)


def test_reinforce_pp_baseline_of_identical_rewards_and_no_kl_is_zero_not_nan():
    mask = torch.tensor([[1, 1], [1, 0]])
    advantages = reinforce_pp_baseline_advantages(
        torch.tensor([2.0, 2.0]), 2, mask, torch.zeros(2, 2), 0.1
    )
    assert advantages.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_reinforce_pp_baseline_refuses_a_group_size_that_does_not_divide_the_batch():
    with pytest.raises(ValueError, match="multiple of 4"):
        reinforce_pp_baseline_advantages(
            torch.zeros(6), 4, torch.ones(6, 2), torch.zeros(6, 2), 0.1
        )


def test_a_response_without_eos_loses_the_penalty_from_its_score():
    scores = torch.tensor([0.5, 0.5, -1.0])
    finished = torch.tensor([True, False, False])
    assert penalised_scores(scores, finished, 2.0).tolist() == [0.5, -1.5, -3.0]


def test_rloo_takes_the_summed_k1_kl_out_of_each_score_before_the_baseline():
    # kl sums over the mask: [0.5 + 0.5, 2.0] (the 9.0 is padding); beta 0.1 -> [-0.1, -0.2].
    scores = torch.tensor([1.0, 3.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[0.5, 0.5], [2.0, 9.0]])
    assert kl_in_score(scores, kl, mask, 0.1).tolist() == pytest.approx([0.9, 2.8])
    # Rewards [0.9, 2.8], K = 2: each minus the other -> [-1.9, 1.9], on every real token.
    advantages = critic_free_advantages("rloo", scores, mask, kl, group_size=2, kl_coef=0.1)
    torch.testing.assert_close(advantages, torch.tensor([[-1.9, -1.9], [1.9, 0.0]]))


def test_grpo_leaves_the_kl_out_of_its_advantages():
    # Scores [1, 3]: mean 2, unbiased std sqrt(2) -> -+1/sqrt(2) (eps 1e-4), whatever the KL.
    scores = torch.tensor([1.0, 3.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[5.0, 5.0], [0.0, 0.0]])
    advantages = critic_free_advantages("grpo", scores, mask, kl, group_size=2, kl_coef=1.0)
    a = 1 / (math.sqrt(2) + 1e-4)
    torch.testing.assert_close(advantages, torch.tensor([[-a, -a], [a, 0.0]]))


def test_reinforce_pp_baseline_is_chosen_by_its_name_and_an_unknown_estimator_refused():
    scores = torch.tensor([1.0, 3.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[0.5, 0.5], [2.0, 9.0]])
    expected = reinforce_pp_baseline_advantages(scores, 2, mask, kl, 0.1)
    chosen = critic_free_advantages(
        "reinforce_pp_baseline", scores, mask, kl, group_size=2, kl_coef=0.1
    )
    assert torch.equal(chosen, expected)
    with pytest.raises(ValueError, match="unknown estimator 'ppo'"):
        critic_free_advantages("ppo", scores, mask, kl, group_size=2, kl_coef=0.1)
