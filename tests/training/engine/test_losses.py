"""Pure math against hand-computed values and plain-loop references."""

from __future__ import annotations

import math

import pytest
import torch

from training.engine.losses import (
    IGNORE_INDEX,
    at_temperature,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_k3,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    pair_accuracy,
    policy_loss_with_kl,
    ppo_policy_loss,
    ppo_value_loss,
    ranking_loss,
    sft_loss,
)


def test_masked_mean_ignores_padding_even_when_it_holds_nan():
    values = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([1.5, 4.0])


def test_masked_whiten_uses_only_real_entries():
    # Real entries 1, 2, 3: mean 2, unbiased variance ((1-2)^2 + 0 + (3-2)^2) / (3-1) = 1.
    values = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    assert masked_whiten(values, mask).tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    unshifted = masked_whiten(values, mask, shift_mean=False)
    assert unshifted.tolist() == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_ranking_loss_for_k3_with_a_tie_drops_the_tied_pair():
    # Completions A, B tied at rank 1, C at rank 2. Pairs: A>C (margin 1 - (-1) = 2) and
    # B>C (margin 0.5 - (-1) = 1.5); A~B is a tie and gives no pair. Loss = mean of -log sigmoid(m)
    # = mean of log(1 + e^-m) over the two pairs.
    scores = torch.tensor([[1.0, 0.5, -1.0]])
    ranks = torch.tensor([[1, 1, 2]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.5))) / 2  # = 0.16417...
    loss, per_ranking = ranking_loss(scores, ranks, valid)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(0.164170, abs=1e-6)
    assert per_ranking.tolist() == pytest.approx([expected], rel=1e-6)


def test_ranking_loss_without_ties_averages_all_k_choose_2_pairs():
    scores = torch.tensor([[0.3, -0.2, 1.1, 0.0]])
    ranks = torch.tensor([[2, 3, 1, 4]])  # order: 2 > 0 > 1 > 3
    valid = torch.ones(1, 4, dtype=torch.bool)
    better_worse = [(2, 0), (2, 1), (2, 3), (0, 1), (0, 3), (1, 3)]
    expected = sum(
        -math.log(1 / (1 + math.exp(-(scores[0, b] - scores[0, w]).item())))
        for b, w in better_worse
    ) / math.comb(4, 2)
    loss, _ = ranking_loss(scores, ranks, valid)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_makes_each_ranking_one_batch_element():
    # A K=2 ranking (1 pair) and a K=3 ranking (3 pairs) weigh the same: the batch loss is the mean
    # of the two rankings' losses, not the mean over all 4 pairs. Padded slots are ignored.
    scores = torch.tensor([[0.0, 1.0, 1e6], [2.0, 1.0, 0.0]])
    ranks = torch.tensor([[1, 2, 0], [1, 2, 3]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    first = math.log1p(math.exp(1.0))  # 0 ranked above 1 although it scores 1 lower
    second = (math.log1p(math.exp(-1.0)) * 2 + math.log1p(math.exp(-2.0))) / 3
    loss, per_ranking = ranking_loss(scores, ranks, valid)
    assert per_ranking.tolist() == pytest.approx([first, second], rel=1e-6)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_a_ranking_of_only_ties_contributes_nothing():
    scores = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    ranks = torch.tensor([[1, 1], [1, 2]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    loss, _ = ranking_loss(scores, ranks, valid)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_pair_accuracy_counts_untied_pairs_ordered_correctly():
    scores = torch.tensor([[3.0, 2.0, 1.0, 9.0]])
    ranks = torch.tensor([[1, 2, 2, 3]])  # pairs: 0>1 ok, 0>2 ok, 0>3 wrong, 1>3 wrong, 2>3 wrong
    correct, pairs = pair_accuracy(scores, ranks, torch.ones(1, 4, dtype=torch.bool))
    assert (int(correct), int(pairs)) == (2, 5)


def gae_reference(rewards, values, lengths, gamma, lam):
    """Plain loop over each response, back to front (as in lm-human-preferences)."""
    advantages = torch.zeros_like(rewards)
    for row, length in enumerate(lengths):
        last = 0.0
        for t in reversed(range(length)):
            next_value = values[row, t + 1].item() if t + 1 < length else 0.0
            delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
            last = delta + gamma * lam * last
            advantages[row, t] = last
    return advantages


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_a_plain_python_loop(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 9, generator=generator)
    values = torch.randn(5, 9, generator=generator)
    lengths = [9, 1, 4, 7, 2]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected = gae_reference(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(returns * mask, (expected + values) * mask, rtol=1e-5, atol=1e-5)
    assert advantages[mask == 0].abs().max() == 0


def test_gae_defaults_are_gamma_1_lambda_0_95():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.zeros(1, 3)
    advantages, _ = gae(rewards, values, torch.ones(1, 3))
    assert advantages[0].tolist() == pytest.approx([0.95**2, 0.95, 1.0])


def test_kl_estimators_are_zero_for_identical_policies_and_k3_is_never_negative():
    logprobs = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert kl_penalty(logprobs, logprobs).abs().max() == 0
    assert kl_k3(logprobs, logprobs).abs().max() == 0
    ref_logprobs = torch.log(torch.tensor([0.4, 0.1, 0.9]))
    assert kl_penalty(logprobs, ref_logprobs).tolist() == pytest.approx(
        [math.log(0.2 / 0.4), math.log(0.5 / 0.1), 0.0]
    )
    ratio = torch.tensor([0.4 / 0.2, 0.1 / 0.5, 1.0])  # ref / pi
    assert kl_k3(logprobs, ref_logprobs).tolist() == pytest.approx(
        (ratio - 1 - ratio.log()).tolist(), abs=1e-6
    )
    assert (kl_k3(logprobs, ref_logprobs) >= 0).all()


def test_logprobs_are_taken_at_the_sampling_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    tokens = torch.tensor([0])
    at_two = logprobs_from_logits(logits, tokens, temperature=2.0)
    by_hand = 1.0 - math.log(math.exp(1.0) + math.exp(0.0) + math.exp(-0.5))
    assert at_two.item() == pytest.approx(by_hand, rel=1e-6)
    assert logprobs_from_logits(logits, tokens).item() != pytest.approx(by_hand)


def test_entropy_from_logits_matches_minus_sum_p_log_p():
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    probs = torch.softmax(logits, -1)
    expected = -(probs * probs.log()).sum(-1)
    assert entropy_from_logits(logits).tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert entropy_from_logits(logits)[0].item() == pytest.approx(math.log(2))


def test_ppo_policy_loss_clips_the_ratio_only_in_the_direction_that_helps():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 1.5, 0.5, 1.0]]))
    advantages = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    loss, stats = ppo_policy_loss(new, old, advantages, torch.ones(1, 4), cliprange=0.2)
    # Per token max(-A r, -A clip(r)): [-1.2, 1.5, 0.8, -2.0]; tokens 0 and 2 are clipped.
    assert loss.item() == pytest.approx((-1.2 + 1.5 + 0.8 - 2.0) / 4)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    expected_kl = 0.5 * (2 * math.log(1.5) ** 2 + math.log(0.5) ** 2) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl, rel=1e-5)


def test_ppo_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old_values = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, -1.0]])
    loss, stats = ppo_value_loss(values, old_values, returns, torch.ones(1, 2), cliprange_value=0.2)
    # Token 0: unclipped 0, clipped (0.2 - 1)^2 = 0.64 -> 0.64. Token 1: (1.1)^2 = 1.21 vs
    # clipped 0.1 is inside the range -> 1.21.
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_explained_variance_is_one_for_a_perfect_value_function_and_zero_for_the_mean():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask).item() == pytest.approx(
        0
    )


def test_sft_loss_ignores_prompt_and_pad_labels():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2], [3, IGNORE_INDEX, IGNORE_INDEX]])
    keep = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert sft_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_padding_is_masked_out_of_every_loss():
    generator = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tensors = [torch.randn(2, 4, generator=generator) for _ in range(6)]
    logprobs, old_logprobs, advantages, values, old_values, returns = tensors
    rewards = torch.randn(2, 4, generator=generator)

    def everything(garbage: float) -> list[torch.Tensor]:
        def dirty(t):
            return torch.where(mask.bool(), t, torch.full_like(t, garbage))

        return [
            ppo_policy_loss(dirty(logprobs), dirty(old_logprobs), dirty(advantages), mask, 0.2)[0],
            ppo_value_loss(dirty(values), dirty(old_values), dirty(returns), mask, 0.2)[0],
            gae(dirty(rewards), dirty(values), mask)[0],
            masked_whiten(dirty(advantages), mask),
            masked_mean(dirty(values), mask),
            explained_variance(dirty(values), dirty(returns), mask),
        ]

    clean, dirty_large, dirty_nan = everything(0.0), everything(1e4), everything(float("nan"))
    for a, b, c in zip(clean, dirty_large, dirty_nan, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_logits_at_temperature_are_fp32_divided_and_untouched_at_one():
    logits = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.bfloat16)
    assert at_temperature(logits, 0.5).tolist() == [[4.0, -2.0, 1.0]]
    assert at_temperature(logits, 0.5).dtype == torch.float32
    plain = logits.float()
    assert at_temperature(plain, 1.0) is plain  # no copy at temperature 1


def test_grpo_adds_beta_times_the_token_mean_k3_kl_to_the_clipped_surrogate():
    # On-policy (ratio 1): surrogate = -mean(A) over the 3 real tokens = -(1 + 1 - 2) / 3 = 0.
    # k3 with log(ref / pi) = d: e^d - 1 - d; d = [0, log 2, -log 2] on the real tokens
    # -> [0, 2 - 1 - log 2, 0.5 - 1 + log 2] = [0, 0.30685, 0.19315], mean 1/6.
    logprobs = torch.tensor([[-1.0, -2.0], [-1.0, -7.0]], requires_grad=True)
    ref_logprobs = torch.tensor([[-1.0, -2.0 + math.log(2)], [-1.0 - math.log(2), 0.0]])
    advantages = torch.tensor([[1.0, 1.0], [-2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = policy_loss_with_kl(
        logprobs, logprobs.detach(), ref_logprobs, advantages, mask, 0.2, 0.5
    )
    assert stats["kl_loss"].item() == pytest.approx(1 / 6)
    assert loss.item() == pytest.approx(0.5 / 6)
    # d k3 / d log pi = 1 - e^d: the gradient pulls log pi toward log ref.
    loss.backward()
    kl_grad = 0.5 / 3 * (1 - torch.tensor([[1.0, 2.0], [0.5, 0.0]]))
    surrogate_grad = -advantages / 3
    expected = torch.where(mask.bool(), surrogate_grad + kl_grad, 0.0)
    torch.testing.assert_close(logprobs.grad, expected)


def test_with_kl_coef_zero_the_loss_is_ppos():
    logprobs = torch.tensor([[-1.0, -2.0]])
    old = torch.tensor([[-1.5, -1.0]])
    ref = torch.tensor([[-3.0, -3.0]])
    advantages, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    loss, _ = policy_loss_with_kl(logprobs, old, ref, advantages, mask, 0.2, 0.0)
    assert loss.item() == ppo_policy_loss(logprobs, old, advantages, mask, 0.2)[0].item()
