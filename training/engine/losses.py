"""Pure tensor math for SFT, the reward model, PPO and the critic-free methods. Imports torch only.

Masks are float or bool tensors shaped like the values they mask; 1 marks a real token.
References: InstructGPT (Ouyang et al. 2022, https://arxiv.org/abs/2203.02155), lm-human-preferences
(Ziegler et al. 2019) and its reproduction https://github.com/vwxyzjn/lm-human-preference-details,
"The N+ implementation details of RLHF with PPO" (Huang et al. 2024, https://arxiv.org/abs/2403.17031).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of `values` where `mask` is set (`where`, not a product: NaN or inf under pad drops)."""
    mask = mask.to(values.dtype)
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    if dim is None:
        return kept.sum() / mask.sum().clamp(min=1)
    return kept.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.to(values.dtype).sum()
        variance = variance * count / (count - 1).clamp(min=1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise to unit variance over the masked entries (and zero mean unless shift_mean=False);
    masked-out entries come back as 0."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy over labels that are not IGNORE_INDEX (the prompt and pad are).

    `logits[..., i, :]` predicts `labels[..., i]`: callers shift before calling."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def at_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature in fp32; at temperature 1 no division, which would still copy (and
    backpropagate through) the (..., vocab) logits.  # like logits"""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(token) under the distribution tokens were sampled from: logits / temperature, as in
    lm-human-preferences (else the PPO ratio compares two different policies).  # like tokens"""
    logprobs = torch.log_softmax(at_temperature(logits, temperature), dim=-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim.  # logits.shape[:-1]"""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def ranking_pairs(ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """better[g, i, j] is true when completion i is ranked strictly better (lower rank) than j.
    Ties and padded slots give no pair.  # (groups, K, K)"""
    both_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return (ranks.unsqueeze(-1) < ranks.unsqueeze(-2)) & both_valid


def ranking_loss(
    scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT reward-model loss over a batch of rankings.

    One ranking of K completions is one batch element: its loss is the mean over its ordered pairs
    of -log sigmoid(r_better - r_worse), i.e. 1/C(K,2) times the sum when there are no ties (Ouyang
    et al. 2022, eq. 1); tied pairs are dropped. Batch loss = mean over rankings with >= 1 pair.

    scores, ranks, valid: (groups, K_max); `valid` marks real completions (K differs by ranking).
    Returns (loss, per-ranking loss).
    """
    better = ranking_pairs(ranks, valid)  # (groups, K, K)
    margins = scores.unsqueeze(-1) - scores.unsqueeze(-2)  # margins[g, i, j] = r_i - r_j
    pair_losses = -F.logsigmoid(margins.float())
    pairs_per_ranking = better.sum((-1, -2))  # (groups,)
    per_ranking = masked_mean(pair_losses, better, dim=(-1, -2))
    has_pairs = pairs_per_ranking > 0
    return masked_mean(per_ranking, has_pairs), per_ranking


def pair_accuracy(
    scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs where the better completion scores strictly higher, number of untied pairs)."""
    better = ranking_pairs(ranks, valid)
    correct = (scores.unsqueeze(-1) > scores.unsqueeze(-2)) & better
    return correct.sum(), better.sum()


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(pi || ref) per token: log pi - log ref. Unbiased; the reward is penalised
    with it (InstructGPT, eq. 2)."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator (r - 1) - log r with r = ref/pi: unbiased and never negative; logged only
    (http://joschu.net/blog/kl-approx.html)."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses, vectorised over time too.

    A_t = sum_l (gamma*lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, with V past the
    last real token = 0 (the episode ends there). The discounted sum is one matmul with an upper-
    triangular matrix of powers, instead of a Python loop over tokens.
    rewards, values, mask: (batch, T). Returns (advantages, returns = advantages + values).
    """
    values = torch.where(mask.bool(), values, torch.zeros_like(values))
    rewards = torch.where(mask.bool(), rewards, torch.zeros_like(rewards))
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = rewards + gamma * next_values - values  # (batch, T)
    steps = torch.arange(values.shape[1], device=values.device, dtype=values.dtype)
    offsets = steps.unsqueeze(0) - steps.unsqueeze(1)  # offsets[t, s] = s - t
    discounts = torch.where(
        offsets >= 0, (gamma * lam) ** offsets.clamp(min=0), torch.zeros_like(offsets)
    )  # (T, T), upper triangular
    advantages = torch.where(mask.bool(), deltas @ discounts.T, torch.zeros_like(deltas))
    return advantages, advantages + values


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), token mean. Returns (loss, stats) with the
    clip fraction and approx-KL 0.5 E[(log pi - log pi_old)^2] as in lm-human-preferences."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),
        "ratio": masked_mean(ratio, mask),
    }
    return loss, stats


def policy_loss_with_kl(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss (Shao et al. 2024, eq. 3; TRL's GRPOTrainer): the clipped surrogate plus
    kl_coef x the k3 KL of the current policy to the reference per token, differentiated through
    log pi; token mean over the batch (TRL's default aggregation, not the paper's mean of
    per-sequence means). With kl_coef 0 it is `ppo_policy_loss` (RLOO and REINFORCE++ put the KL
    in the reward instead). Returns (loss, stats) with the k3 term as "kl_loss"."""
    loss, stats = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange)
    kl = masked_mean(kl_k3(logprobs, ref_logprobs), mask)
    return loss + kl_coef * kl, {**stats, "kl_loss": kl}


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss 0.5 E[max((V - R)^2, (V_clip - R)^2)], V_clip kept within cliprange_value
    of the rollout values (lm-human-preferences / openai baselines)."""
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return loss, {"clipfrac": masked_mean((clipped_loss > unclipped_loss).float(), mask)}


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """1 - Var[R - V] / Var[R]: 1 is a perfect value function, 0 no better than a constant."""
    return 1 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)


def preference_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """(better, worse) index pairs of one ranking: every C(K,2) pair, ties dropped (rank 1 is
    best), as InstructGPT's reward model and DPO both train on them."""
    return [
        (i, j) if ranks[i] < ranks[j] else (j, i)
        for i in range(len(ranks))
        for j in range(i + 1, len(ranks))
        if ranks[i] != ranks[j]
    ]


def dpo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss (Rafailov et al. 2023, eq. 7, https://arxiv.org/abs/2305.18290) and the
    implicit reward margin. A log-ratio is log pi(y|x) - log pi_ref(y|x), summed over the
    response tokens. With label_smoothing e > 0 the labels are taken as flipped with
    probability e (conservative DPO, as TRL's "sigmoid" loss):
    -(1 - e) log sigmoid(beta m) - e log sigmoid(-beta m), m = chosen - rejected.
    # (pairs,), (pairs,)"""
    margins = beta * (chosen_logratios - rejected_logratios)
    losses = -(1 - label_smoothing) * F.logsigmoid(margins) - label_smoothing * F.logsigmoid(
        -margins
    )
    return losses, margins
