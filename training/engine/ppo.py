"""PPO against the reward model with a per-token KL penalty to the SFT model (InstructGPT step 3).

The recipe of lm-human-preferences (Ziegler et al. 2019) as reproduced in
https://github.com/vwxyzjn/lm-human-preference-details and "The N+ implementation details of RLHF
with PPO" (Huang et al. 2024):
  - policy and frozen reference both start as the SFT model; the value model starts as the reward
    model (trunk, head and score offset) and is a separate network;
  - dropout is off everywhere, so log-probs and values are deterministic functions of the weights;
  - log-probs are taken at the sampling temperature (logits / T);
  - reward per token = -beta * (log pi - log ref), plus the RM score at the last response token; a
    response that never emits EOS has a fixed penalty subtracted from its score;
  - GAE (gamma = 1, lambda = 0.95), advantages whitened per batch, clipped policy and value losses,
    4 PPO epochs over each rollout batch;
  - optional PPO-ptx: gamma_ptx * SFT loss on demonstrations added to each gradient step
    (InstructGPT).
data: {"prompts": [prompt or {"prompt": ...}, ...], "demonstrations": [...] (for PPO-ptx)}
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import checkpoint, cpu_fast, distributed
from training.engine.config import CriticFreeConfig, PPOConfig
from training.engine.cpu_fast import first_pass as reuse_first_pass
from training.engine.cpu_fast.first_pass import FirstPass
from training.engine.cpu_fast.threads import SideBySide, in_order
from training.engine.data import (
    Example,
    batch_for_step,
    collate_sft,
    encode_demonstrations,
    encode_prompts,
    prompt_of,
    user_text,
)
from training.engine.lm import (
    disable_dropout,
    end_training,
    freeze,
    frozen_role,
    load_causal_lm,
    load_tokenizer,
    save_causal_lm,
    take_role,
    trainable_parameters,
    trained_role,
)
from training.engine.losses import (
    explained_variance,
    gae,
    kl_k3,
    kl_penalty,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from training.engine.optim import clip_grad
from training.engine.precision import (
    Amp,
    Precision,
    resolve_device,
    resolve_precision,
    seed_everything,
    to_device,
)
from training.engine.progress import ProgressFn, last_value
from training.engine.reward_model import RewardModel
from training.engine.rollout import (
    RewardFn,
    Rollout,
    Scorer,
    function_scorer,
    gather,
    hold_out,
    make_rollout,
    response_logprobs,
    reward_model_scorer,
    unpack,
)
from training.engine.sampler import BuiltinSampler
from training.engine.sft import backward_sharded, response_loss


def token_rewards(
    rollout: Rollout, kl_coef: float, missing_eos_penalty: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token k1 KL): -beta * KL on every token, plus the (penalised) score
    on the last response token.  # (batch, T)"""
    response_mask = rollout.response_mask.bool()  # (batch, T)
    kl = torch.where(response_mask, kl_penalty(rollout.logprobs, rollout.ref_logprobs), 0.0)
    scores = rollout.scores - missing_eos_penalty * (~rollout.finished).float()
    rewards = -kl_coef * kl
    last = rollout.response_mask.sum(1) - 1  # (batch,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores
    return rewards, kl


@dataclass
class UpdateBatch:
    """What the PPO epochs train on: plain (not inference-mode) tensors, fixed during the epochs."""

    query_responses: torch.Tensor  # (batch, prompt_length + T)
    attention_mask: torch.Tensor  # (batch, prompt_length + T)
    responses: torch.Tensor  # (batch, T)
    response_mask: torch.Tensor  # (batch, T) float
    old_logprobs: torch.Tensor  # (batch, T)
    old_values: torch.Tensor  # (batch, T)
    advantages: torch.Tensor  # (batch, T)
    returns: torch.Tensor  # (batch, T)
    prompt_length: int


def backward_part(
    policy: PreTrainedModel,
    value_model: RewardModel,
    batch: UpdateBatch,
    part: torch.Tensor,
    share: float,
    cfg: PPOConfig,
    amp: Amp,
    first_pass: FirstPass | None = None,
    side: SideBySide | None = None,
) -> dict[str, float]:
    """Backpropagate `share` x the clipped PPO losses of the episodes `part`, cut to their longest
    response (the columns after it are all padding). Token means weighted by each part's share of
    the minibatch's tokens sum to the minibatch's token means: the gradient is the minibatch's.
    first_pass: the rollout's differentiable log-probs and values, used instead of the forwards
    (valid only at the rollout's weights, i.e. before the first optimizer step)."""
    width = int(batch.response_mask[part].sum(1).max())
    columns = slice(0, batch.prompt_length + width)
    query_responses = batch.query_responses[part, columns]
    attention_mask = batch.attention_mask[part, columns]
    response_mask = batch.response_mask[part, :width]
    responses = batch.responses[part, :width]

    def policy_side() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if first_pass is not None:  # cpu_fast: the rollout's own forward, its graph kept
            logprobs = first_pass.logprobs[part, :width]
        else:
            with amp():
                logprobs, _ = response_logprobs(
                    policy,
                    query_responses,
                    attention_mask,
                    responses,
                    response_mask,
                    batch.prompt_length,
                    cfg.temperature,
                )
            logprobs = unpack(logprobs, response_mask)
        loss, loss_stats = ppo_policy_loss(
            logprobs,
            batch.old_logprobs[part, :width],
            batch.advantages[part, :width],
            response_mask,
            cfg.cliprange,
        )
        (share * loss).backward()
        return loss, loss_stats

    def value_side() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if first_pass is not None:  # cpu_fast: the rollout's own forward, its graph kept
            values = first_pass.values[part, :width]
        else:
            with amp():
                values = value_model.response_values(
                    query_responses, attention_mask, batch.prompt_length, response_mask
                )
            values = unpack(values.float(), response_mask)
        loss, loss_stats = ppo_value_loss(
            values,
            batch.old_values[part, :width],
            batch.returns[part, :width],
            response_mask,
            cfg.cliprange_value,
        )
        # The two networks share no parameter: two backward passes give the gradients of
        # share * (policy loss + vf_coef * value loss).
        (share * cfg.vf_coef * loss).backward()
        return loss, loss_stats

    (policy_loss, policy_stats), (value_loss, value_stats) = (side or in_order)(
        policy_side, value_side
    )
    stats = {
        "loss/policy": policy_loss,
        "loss/value": value_loss,
        "policy/clipfrac": policy_stats["clipfrac"],
        "policy/approx_kl": policy_stats["approx_kl"],
        "policy/ratio": policy_stats["ratio"],
        "value/clipfrac": value_stats["clipfrac"],
    }
    return {name: share * value.item() for name, value in stats.items()}


def length_parts(
    minibatch: torch.Tensor, response_lengths: torch.Tensor, split: bool = True
) -> list[tuple[torch.Tensor, float]]:
    """Split a minibatch, sorted by response length, into halves, each with its share of the
    minibatch's response tokens. `backward_part` cuts each half to its own longest response, so
    the padding after EOS (often half the response tokens of a batch) is not computed. With
    split=False (models whose forward skips padding anyway), one part: the whole minibatch."""
    lengths = response_lengths[minibatch]
    by_length = minibatch[lengths.argsort()]
    halves = split and len(by_length) >= 8
    parts = by_length.split((len(by_length) + 1) // 2) if halves else (by_length,)
    total = float(lengths.sum())
    return [(part, float(response_lengths[part].sum()) / total) for part in parts]


def minibatch_parts(
    minibatch: torch.Tensor,
    response_lengths: torch.Tensor,
    split: bool,
    world: distributed.World,
) -> list[tuple[torch.Tensor, float]]:
    """The parts of a minibatch this process backpropagates, each with its weight: in one
    process `length_parts`; sharded, every world.size-th episode, weighted by its share of the
    minibatch's response tokens x world.size (FSDP's reduce-scatter divides by world.size), so
    the gradients the ranks average are the minibatch's."""
    if not world.sharded:
        return length_parts(minibatch, response_lengths, split)
    mine = minibatch[world.rank :: world.size]
    share = float(response_lengths[mine].sum() / response_lengths[minibatch].sum())
    return [(mine, share * world.size)]


def over_ranks(
    stats: dict[str, float], world: distributed.World, device: torch.device
) -> dict[str, float]:
    """A minibatch's statistics from each rank's (`minibatch_parts`' weights): their mean over the
    ranks. In one process, `stats` itself."""
    if not world.sharded:
        return stats
    summed = distributed.all_sum_each(stats, device)
    return defaultdict(float, {name: value / world.size for name, value in summed.items()})


@dataclass
class Models:
    """PPO's networks: the trained policy and value model, the frozen reference and reward model."""

    policy: PreTrainedModel
    reference: PreTrainedModel  # with LoRA, the policy itself, run with its adapters off
    value_model: RewardModel
    reward_model: RewardModel | None  # None with a programmatic reward_fn

    def trained(self) -> dict[str, torch.nn.Module]:
        """The networks a checkpoint saves."""
        return {"policy": self.policy, "value_model": self.value_model}


def load_models(
    cfg: PPOConfig,
    tokenizer: PreTrainedTokenizerBase,
    precision: Precision,
    trained_only: bool = False,
) -> Models:
    """Policy and reference from the SFT model; the value model from the reward model (or a fresh
    head on the SFT trunk for a programmatic reward); dropout off in all of them. The trained
    ones in the master-weights dtype (LoRA on the policy and the value model's trunk, the value
    head trained fully), the frozen ones in the frozen dtype. trained_only: the policy and the
    value model (the reference is the policy, no reward model), to take trained weights."""
    device, trained, frozen = precision.device, trained_role(cfg, precision), frozen_role(precision)
    policy = load_causal_lm(cfg.policy_path, tokenizer, device, trained)
    # With LoRA the reference is the policy with its adapters off, as in TRL: one copy of the base
    # weights (in the policy's dtype). make_rollout then runs the two one after the other.
    reference = policy
    if trained.lora is None and not trained_only:
        reference = load_causal_lm(cfg.policy_path, tokenizer, device, frozen)
    value_init = cfg.value_model_path or cfg.reward_model_path
    if value_init is not None:
        value_model = RewardModel.from_pretrained(value_init, tokenizer, device, trained.dtype)
    else:  # a programmatic reward: the value head starts fresh on the SFT trunk
        value_model = RewardModel.from_causal_lm(cfg.policy_path, tokenizer, device, trained.dtype)
    take_role(value_model.trunk, trained)
    reward_model = None
    if cfg.reward_model_path is not None and not trained_only:
        reward_model = freeze(
            RewardModel.from_pretrained(cfg.reward_model_path, tokenizer, device, frozen.dtype)
        )
    for model in (policy, reference, value_model, reward_model):
        if model is not None:
            disable_dropout(model)
    return Models(policy, reference, value_model, reward_model)


def make_optimizer(cfg: PPOConfig, models: Models, fused: bool = True) -> torch.optim.Optimizer:
    """One Adam over both trained networks, each at its own learning rate (fused: one kernel per
    update; sharded DTensor parameters take the foreach path)."""
    return torch.optim.Adam(
        [
            {"params": trainable_parameters(models.policy), "lr": cfg.lr},
            {"params": trainable_parameters(models.value_model), "lr": cfg.value_lr},
        ],
        eps=cfg.adam_eps,
        fused=fused,
    )


def ptx_backward(
    policy: PreTrainedModel,
    examples: list[Example],
    gradient_step: int,
    cfg: PPOConfig | CriticFreeConfig,
    pad_token_id: int,
    amp: Amp,
    world: distributed.World | None = None,
) -> float:
    """PPO-ptx: backpropagate gamma_ptx x the SFT loss of a batch of demonstrations, which keeps
    their likelihood (InstructGPT eq. 2); return the loss. A sharded `world`: each rank its part
    of the batch (sft.backward_sharded)."""
    demos = batch_for_step(examples, gradient_step, cfg.ptx_batch_size, cfg.seed)
    if world is not None and world.sharded:
        return backward_sharded(
            policy, demos, pad_token_id, amp, world, policy.device, scale=cfg.ptx_coef
        )
    ptx_batch = to_device(collate_sft(demos, pad_token_id), policy.device)
    with amp():
        ptx_loss = response_loss(policy, ptx_batch)
    (cfg.ptx_coef * ptx_loss).backward()
    return ptx_loss.item()


def ppo_epochs(
    models: Models,
    optimizer: torch.optim.Optimizer,
    batch: UpdateBatch,
    rollout: Rollout,
    cfg: PPOConfig,
    *,
    step: int,
    amp: Amp,
    side: SideBySide,
    ptx_examples: list[Example],
    pad_token_id: int,
    world: distributed.World,
) -> dict[str, list[float]]:
    """cfg.ppo_epochs passes over the rollout in shuffled minibatches, one optimizer step each;
    returns each minibatch's losses and statistics. Sharded, every rank holds the whole rollout
    and shuffles it alike, and takes every world.size-th episode of each minibatch, weighted by
    its share of the minibatch's tokens: the gradients FSDP averages are the minibatch's."""
    stats: dict[str, list[float]] = defaultdict(list)
    shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    episodes = batch.query_responses.shape[0]
    response_lengths = rollout.response_mask.sum(1)  # (batch,)
    # GPT-2 computes real tokens only: there is no padding left for length parts to save.
    split = not (
        cpu_fast.gpt2_applies(models.policy) and cpu_fast.gpt2_applies(models.value_model.trunk)
    )
    gradient_steps = (step - 1) * cfg.ppo_epochs * (cfg.batch_size // cfg.mini_batch_size)
    first_pass = rollout.first_pass
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(episodes, generator=shuffle).to(response_lengths.device)
        for minibatch in order.split(cfg.mini_batch_size):
            optimizer.zero_grad(set_to_none=True)
            minibatch_stats: dict[str, float] = defaultdict(float)
            # cpu_fast: the first step backpropagates through the rollout's forwards, whole.
            if first_pass is not None:
                parts = [(minibatch, 1.0)]
            else:
                parts = minibatch_parts(minibatch, response_lengths, split, world)
            for part, share in parts:
                part_stats = backward_part(
                    models.policy,
                    models.value_model,
                    batch,
                    part,
                    share,
                    cfg,
                    amp,
                    first_pass,
                    side,
                )
                for name, value in part_stats.items():
                    minibatch_stats[name] += value
            first_pass = rollout.first_pass = None  # the weights are about to change
            minibatch_stats = over_ranks(minibatch_stats, world, response_lengths.device)
            if ptx_examples:
                minibatch_stats["loss/ptx"] = ptx_backward(
                    models.policy, ptx_examples, gradient_steps, cfg, pad_token_id, amp, world
                )
            if world.sharded:
                distributed.clip_grad(list(models.policy.parameters()), cfg.grad_clip)
                distributed.clip_grad(list(models.value_model.parameters()), cfg.grad_clip)
            else:
                clip_grad(models.policy.parameters(), cfg.grad_clip)
                clip_grad(models.value_model.parameters(), cfg.grad_clip)
            optimizer.step()
            gradient_steps += 1
            for name, value in minibatch_stats.items():
                stats[name].append(value)
    return stats


def step_metrics(
    rollout: Rollout,
    rewards: torch.Tensor,
    kl: torch.Tensor,
    returns: torch.Tensor,
    stats: dict[str, list[float]],
) -> dict[str, float]:
    """What a PPO step logs: per-sequence sums for KL, token means for entropy, and the mean of
    each minibatch statistic."""
    response_mask = rollout.response_mask.float()  # (batch, T)
    k3 = torch.where(response_mask.bool(), kl_k3(rollout.logprobs, rollout.ref_logprobs), 0.0)
    return {
        "reward/score": rollout.scores.mean().item(),
        "reward/total": rewards.sum(1).mean().item(),
        "kl/k1": kl.sum(1).mean().item(),
        "kl/k3": k3.sum(1).mean().item(),
        "policy/entropy": masked_mean(rollout.entropy, response_mask).item(),
        "value/explained_variance": explained_variance(
            rollout.values, returns, response_mask
        ).item(),
        "response/length": response_mask.sum(1).mean().item(),
        "response/eos_rate": rollout.finished.float().mean().item(),
        **{name: sum(values) / len(values) for name, values in stats.items()},
    }


def ppo_step(
    models: Models,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    rollout_timings: dict[str, float],
    cfg: PPOConfig,
    *,
    step: int,
    amp: Amp,
    side: SideBySide,
    ptx_examples: list[Example],
    pad_token_id: int,
    world: distributed.World | None = None,
) -> dict[str, float]:
    """One PPO step on a rollout (sharded: the whole batch's, on every rank): per-token rewards,
    GAE advantages, then the PPO epochs. Returns the step's metrics and timings (rewards and
    advantages count as scoring)."""
    scoring_started = time.perf_counter()
    with torch.no_grad():
        response_mask = rollout.response_mask.float()  # (batch, T)
        rewards, kl = token_rewards(rollout, cfg.kl_coef, cfg.missing_eos_penalty)
        advantages, returns = gae(rewards, rollout.values, response_mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, response_mask)
        # The rollout's tensors are plain ones (make_rollout), so autograd can save them.
        batch = UpdateBatch(
            query_responses=rollout.query_responses,
            attention_mask=rollout.attention_mask,
            responses=rollout.responses,
            response_mask=response_mask,
            old_logprobs=rollout.logprobs,
            old_values=rollout.values,
            advantages=advantages,
            returns=returns,
            prompt_length=rollout.prompt_length,
        )
    scoring = time.perf_counter() - scoring_started

    update_started = time.perf_counter()
    stats = ppo_epochs(
        models,
        optimizer,
        batch,
        rollout,
        cfg,
        step=step,
        amp=amp,
        side=side,
        ptx_examples=ptx_examples,
        pad_token_id=pad_token_id,
        world=world or distributed.World(),
    )
    timings = {
        **rollout_timings,
        "time/scoring": rollout_timings["time/scoring"] + scoring,
        "time/update": time.perf_counter() - update_started,
    }
    return {**step_metrics(rollout, rewards, kl, returns, stats), **timings}


def scorer_for(
    models: Models, reward_fn: RewardFn | None, tokenizer: PreTrainedTokenizerBase
) -> Callable[[list[str]], Scorer]:
    """(the batch's prompts as the user wrote them) -> how its responses are scored: the reward
    model, or the programmatic reward_fn."""
    if models.reward_model is not None:
        scorer = reward_model_scorer(models.reward_model)
        return lambda prompt_texts: scorer
    assert reward_fn is not None  # run() takes exactly one of the two
    return partial(function_scorer, reward_fn, tokenizer)


def save(
    cfg: PPOConfig,
    models: Models,
    tokenizer: PreTrainedTokenizerBase,
    total_steps: int,
    history: list[dict[str, float]],
    world: distributed.World | None = None,
) -> dict:
    """Write the policy and the value model (LoRA merged: plain directories), then the run's
    result. Sharded: every rank gathers the weights, rank 0 writes them as one process would."""
    policy, value_model = models.policy, models.value_model
    model_dir = Path(cfg.output_dir) / "model"
    value_dir = Path(cfg.output_dir) / "value_model"
    result = {
        "output_dir": str(cfg.output_dir),
        "model_dir": str(model_dir),
        "value_model_dir": str(value_dir),
        "total_steps": total_steps,
        "metrics": {
            name: last_value(history, name)
            for name in ("reward/score", "kl/k1", "kl/k3", "policy/entropy", "response/eos_rate")
        },
        "history": history,
    }
    if world is not None and world.sharded:
        policy_weights = distributed.full_state_dict(policy)
        value_weights = distributed.full_state_dict(value_model)
        if not world.main:
            return result
        plain = load_models(cfg, tokenizer, resolve_precision(torch.device("cpu"), cfg.dtype,
                            master_weights=cfg.master_weights, frozen_dtype=cfg.frozen_dtype),
                            trained_only=True)  # fmt: skip
        policy, value_model = plain.policy, plain.value_model
        policy.load_state_dict(policy_weights)
        value_model.load_state_dict(value_weights)
    end_training(policy)
    end_training(value_model.trunk)
    checkpoint.write_dir_atomically(model_dir, lambda tmp: save_causal_lm(policy, tokenizer, tmp))
    checkpoint.write_dir_atomically(
        value_dir, lambda tmp: value_model.save_pretrained(tmp, tokenizer)
    )
    checkpoint.write_result(cfg.output_dir, result)
    return result


# A launcher finds a stage's config class beside its run(): training.engine.ppo.Config.
Config = PPOConfig


def run(
    cfg: PPOConfig,
    data: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    reward_fn: RewardFn | None = None,
) -> dict:
    return start_online(
        "PPO", cfg, reward_fn,
        lambda world, device: _train(cfg, data, world, device, on_progress, reward_fn),
    )  # fmt: skip


def start_online(
    name: str,
    cfg: PPOConfig | CriticFreeConfig,
    reward_fn: RewardFn | None,
    train: Callable[[distributed.World, torch.device], dict],
) -> dict:
    """How an online stage (PPO, critic-free RL) starts: a finished run's result as it is; one
    source of reward; then `train` in this process's place in the group, once the config is
    known to split its batches over the group."""
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    if (reward_fn is None) == (cfg.reward_model_path is None):
        raise ValueError(f"{name} needs exactly one of cfg.reward_model_path and reward_fn")
    with distributed.process_group(resolve_device(cfg.device), cfg.collective_timeout_s) as (
        world,
        device,
    ):
        if problem := cfg.shared_batch_problem(world.size):
            raise ValueError(f"{name} in {world.size} processes: {problem}")
        return train(world, device)


def _train(
    cfg: PPOConfig,
    data: dict[str, Any],
    world: distributed.World,
    device: torch.device,
    on_progress: ProgressFn | None,
    reward_fn: RewardFn | None,
) -> dict:
    """PPO in this process; in several (a sharded `world`), the trained networks sharded with
    FSDP2 and the frozen ones whole on every rank; each rank samples and scores its part of
    every batch, then every rank holds the whole rollout (rollout.gather) and trains on its part
    of each minibatch."""
    seed_everything(cfg.seed)
    precision = resolve_precision(
        device, cfg.dtype, master_weights=cfg.master_weights, frozen_dtype=cfg.frozen_dtype
    )
    amp = precision.amp
    tokenizer = load_tokenizer(cfg.policy_path)
    models = load_models(cfg, tokenizer, precision)
    if world.sharded:
        distributed.shard(models.policy)
        distributed.shard(models.value_model, forward_methods=("response_values",))
    part = (world.rank, world.size) if world.sharded else None
    score_batch = scorer_for(models, reward_fn, tokenizer)
    # The rollouts sample from the policy being trained (cfg.sampler is "auto" or "builtin").
    sampler = BuiltinSampler(models.policy, tokenizer, amp, compile=cfg.compile)

    prompts = [prompt_of(record) for record in data["prompts"]]
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.max_prompt_length)
    prompt_texts = [user_text(p) for p in prompts]
    ptx_examples = []
    if cfg.ptx_coef > 0:
        ptx_examples = encode_demonstrations(tokenizer, data["demonstrations"], cfg.ptx_max_length)

    total_steps = cfg.total_episodes // cfg.batch_size
    optimizer = make_optimizer(cfg, models, fused=not world.sharded)
    optimizers = {"optimizer": optimizer}
    start, history = checkpoint.resume_history(
        cfg.output_dir, models=models.trained(), optimizers=optimizers
    )
    held_out = hold_out(
        sampler, score_batch, prompt_ids, prompt_texts, wanted=cfg.eval_prompts,
        resumed=start > 0, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, batch_size=cfg.batch_size,
    )  # fmt: skip

    # The policy's and the value model's passes run side by side on a multi-core CPU (cpu_fast).
    with SideBySide(device, allowed=not world.sharded).running() as side:
        for step in range(start + 1, total_steps + 1):
            # Rollout: sample a response per prompt, score it, evaluate log-probs and values.
            indices = batch_for_step(held_out.train, step - 1, cfg.batch_size, cfg.seed)
            mine = indices[world.rank :: world.size]
            rollout, timings = make_rollout(
                models.policy,
                models.reference,
                models.value_model,
                score_batch([prompt_texts[i] for i in mine]),
                [prompt_ids[i] for i in indices],
                sampler=sampler,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed * 1_000_003 + step,
                amp=amp,
                # cpu_fast: the first gradient step backpropagates through the rollout's forwards.
                keep_graph=not world.sharded
                and reuse_first_pass.applies(device, cfg.batch_size, cfg.mini_batch_size),
                side=side,
                part=part,
            )
            if world.sharded:  # every rank gets the whole batch's episodes
                rollout = gather(rollout, world, tokenizer.pad_token_id)
            # Rewards, advantages and the PPO epochs over the rollout.
            metrics = ppo_step(
                models,
                optimizer,
                rollout,
                timings,
                cfg,
                step=step,
                amp=amp,
                side=side,
                ptx_examples=ptx_examples,
                pad_token_id=tokenizer.pad_token_id,
                world=world,
            )
            if step == start + 1:
                metrics |= held_out.before
            if held_out.evaluate is not None and step == total_steps:
                with side.alone():
                    metrics["eval/score"] = held_out.evaluate()
            history.append({"step": step, **metrics})
            checkpoint.save_if_due(
                cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
                models=models.trained(), optimizers=optimizers, history=history, world=world,
            )  # fmt: skip
            if on_progress is not None and world.main:
                on_progress(step, total_steps, metrics)
    return save(cfg, models, tokenizer, total_steps, history, world)
