"""Advantages for the critic-free methods: GRPO, RLOO and REINFORCE++-baseline. Imports torch only.

Each method samples K completions of a prompt; `rewards` holds one scalar per completion, the K of a
prompt in contiguous rows (prompt 0's K, then prompt 1's K, ...), as TRL's and OpenRLHF's samplers
lay them out. Masks are float or bool (batch, T) tensors; 1 marks a response token.
"""

from __future__ import annotations

import torch

from training.engine.losses import masked_mean, masked_var


def grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """View (batch,) rewards as (prompts, K), refusing a batch that is not whole groups of >= 2."""
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 to have a baseline, got {group_size}")
    if rewards.dim() != 1 or rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} are not whole groups of group_size="
            f"{group_size}: expected a 1-d batch whose length is a multiple of {group_size}"
        )
    return rewards.view(-1, group_size)  # (prompts, K)


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, DeepSeekMath, sec. 4.1.2,
    https://arxiv.org/abs/2402.03300): (r - mean of its group) / (std of its group + eps).

    As TRL's GRPOTrainer: the std is torch's default, unbiased (Bessel, divide by K - 1), eps is
    added to it (1e-4 there), and scale=False (TRL's `scale_rewards=False`, Dr. GRPO) keeps only
    the mean. A group of identical rewards gets 0. # (batch,)"""
    groups = grouped(rewards, group_size)  # (prompts, K)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    return advantages.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740, eq. 5;
    TRL's RLOOTrainer): r_i minus the mean of the other K - 1 rewards of its group,
    (sum - r_i) / (K - 1). # (batch,)"""
    groups = grouped(rewards, group_size)  # (prompts, K)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def last_token_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """True at each row's last response token (right-padded responses). # (batch, T)"""
    mask = response_mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=1, keepdim=True)
    return mask & (positions == last)


def sequence_to_tokens(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Give every response token its sequence's advantage (GRPO and RLOO score whole completions);
    0 under the mask's zeros. (batch,) -> (batch, T)"""
    per_token = advantages.unsqueeze(1).expand(response_mask.shape).to(torch.float32)
    return torch.where(response_mask.bool(), per_token, torch.zeros_like(per_token))


def reverse_cumsum(values: torch.Tensor) -> torch.Tensor:
    """returns[t] = sum of values[s] for s >= t along the last dim (undiscounted return)."""
    return values.flip(-1).cumsum(-1).flip(-1)


def reinforce_pp_baseline_advantages(
    rewards: torch.Tensor,
    group_size: int,
    response_mask: torch.Tensor,
    kl_per_token: torch.Tensor,
    kl_coef: float,
    eps: float = 1e-8,
) -> torch.Tensor:
    """REINFORCE++-baseline (Hu et al. 2025, https://arxiv.org/abs/2501.03262), as OpenRLHF's
    `advantage_estimator="reinforce_baseline"` computes it:
    1. subtract the group mean from each reward (no division by the std);
    2. token rewards: -kl_coef * kl on every response token, plus the centred reward on the last
       one (OpenRLHF's `compute_reward`);
    3. returns: the undiscounted sum of token rewards from t to the end (gamma is forced to 1);
    4. whiten the returns over all response tokens of the batch: population variance (divide by
       the token count), clamped below at eps before the rsqrt, as OpenRLHF does.
    rewards: (batch,); response_mask, kl_per_token: (batch, T). Returns advantages, 0 off the mask.
    # (batch, T)"""
    mask = response_mask.bool()
    centred = grouped(rewards, group_size)
    centred = (centred - centred.mean(dim=1, keepdim=True)).reshape(-1)  # (batch,)
    kl_rewards = torch.where(mask, -kl_coef * kl_per_token, torch.zeros_like(kl_per_token))
    token_rewards = kl_rewards + torch.where(
        last_token_mask(mask), centred.unsqueeze(1), torch.zeros_like(kl_rewards)
    )  # (batch, T)
    returns = reverse_cumsum(token_rewards)
    mean = masked_mean(returns, mask)
    rstd = masked_var(returns, mask, unbiased=False).clamp(min=eps).rsqrt()
    return torch.where(mask, (returns - mean) * rstd, torch.zeros_like(returns))


def penalised_scores(
    scores: torch.Tensor, finished: torch.Tensor, missing_eos_penalty: float
) -> torch.Tensor:
    """Each score minus a fixed penalty when its response never emitted EOS (TRL's
    missing_eos_penalty; PPO's token_rewards does the same). # (batch,)"""
    return scores - missing_eos_penalty * (~finished.bool()).float()


def kl_in_score(
    scores: torch.Tensor, kl_per_token: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """RLOO's sequence reward (TRL's RLOOTrainer, Ahmadian et al. sec. 3): the score minus kl_coef x
    the k1 KL summed over the response's tokens. # (batch,)"""
    kl = torch.where(response_mask.bool(), kl_per_token, torch.zeros_like(kl_per_token))
    return scores - kl_coef * kl.sum(dim=1)


def critic_free_advantages(
    estimator: str,
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    kl_per_token: torch.Tensor,
    *,
    group_size: int,
    kl_coef: float,
) -> torch.Tensor:
    """Per-token advantages of one estimator ("grpo", "rloo", "reinforce_pp_baseline") from the
    (penalised) scores and the k1 KL to the reference per token. GRPO's advantages leave the KL
    out (it is a loss term: `losses.policy_loss_with_kl`); RLOO subtracts it from each sequence's
    reward before the leave-one-out baseline; REINFORCE++-baseline adds it per token before the
    returns. scores: (batch,); response_mask, kl_per_token: (batch, T). # (batch, T)"""
    if estimator == "grpo":
        return sequence_to_tokens(grpo_advantages(scores, group_size), response_mask)
    if estimator == "rloo":
        rewards = kl_in_score(scores, kl_per_token, response_mask, kl_coef)
        return sequence_to_tokens(rloo_advantages(rewards, group_size), response_mask)
    if estimator == "reinforce_pp_baseline":
        return reinforce_pp_baseline_advantages(
            scores, group_size, response_mask, kl_per_token, kl_coef
        )
    raise ValueError(f"unknown estimator {estimator!r}")
