"""Critic-free online RL against the reward model: GRPO, RLOO and REINFORCE++-baseline.

No value model: each prompt is sampled K = group_size times and every response is judged against
the others of its group (advantages.py). The three estimators differ in the baseline and in where
the KL to the SFT reference enters:
  - GRPO (Shao et al. 2024, https://arxiv.org/abs/2402.03300; TRL's GRPOTrainer): advantage =
    (score - group mean) / group std; KL as a k3 loss term, kl_coef x k3 per token;
  - RLOO (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740; TRL's RLOOTrainer): reward =
    score - kl_coef x (k1 KL summed over the response), advantage = reward - mean of the others;
  - REINFORCE++-baseline (Hu et al. 2025, https://arxiv.org/abs/2501.03262; OpenRLHF's
    "reinforce_baseline"): -kl_coef x k1 on every token plus the group-centred score on the last,
    undiscounted returns whitened over the batch.
All three train with PPO's clipped surrogate over update_epochs passes of shuffled minibatches
(1 epoch = on-policy, where the clip acts only on the later minibatches of a step). As PPO, dropout
is off, log-probs are taken at the sampling temperature, a response without EOS has
missing_eos_penalty subtracted from its score, and PPO-ptx is optional.
data: {"prompts": [prompt or {"prompt": ...}, ...], "demonstrations": [...] (for ptx)}
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import checkpoint, cpu_fast, distributed
from training.engine.advantages import critic_free_advantages, penalised_scores
from training.engine.config import CriticFreeConfig
from training.engine.cpu_fast import first_pass as reuse_first_pass
from training.engine.cpu_fast.first_pass import FirstPass
from training.engine.data import (
    Example,
    batch_for_step,
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
    trainable_parameters,
    trained_role,
)
from training.engine.losses import kl_k3, kl_penalty, masked_mean, policy_loss_with_kl
from training.engine.optim import clip_grad
from training.engine.ppo import minibatch_parts, over_ranks, ptx_backward, start_online
from training.engine.precision import (
    Amp,
    Precision,
    resolve_precision,
    seed_everything,
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


@dataclass
class Models:
    """The trained policy, the frozen reference and the reward model (None with a reward_fn)."""

    policy: PreTrainedModel
    reference: PreTrainedModel  # with LoRA, the policy itself, run with its adapters off
    reward_model: RewardModel | None

    def trained(self) -> dict[str, torch.nn.Module]:
        """The networks a checkpoint saves."""
        return {"policy": self.policy}


def load_models(
    cfg: CriticFreeConfig, tokenizer: PreTrainedTokenizerBase, precision: Precision
) -> Models:
    """Policy and reference from the SFT model, the reward model frozen, dropout off (as PPO's)."""
    device, trained, frozen = precision.device, trained_role(cfg, precision), frozen_role(precision)
    policy = load_causal_lm(cfg.policy_path, tokenizer, device, trained)
    reference = policy  # with LoRA: the policy with its adapters off (make_rollout)
    if trained.lora is None:
        reference = load_causal_lm(cfg.policy_path, tokenizer, device, frozen)
    reward_model = None
    if cfg.reward_model_path is not None:
        reward_model = freeze(
            RewardModel.from_pretrained(cfg.reward_model_path, tokenizer, device, frozen.dtype)
        )
    for model in (policy, reference, reward_model):
        if model is not None:
            disable_dropout(model)
    return Models(policy, reference, reward_model)


def minibatch_backward(
    policy: PreTrainedModel,
    rollout: Rollout,
    advantages: torch.Tensor,
    part: torch.Tensor,
    share: float,
    cfg: CriticFreeConfig,
    amp: Amp,
    first_pass: FirstPass | None = None,
) -> dict[str, float]:
    """Backpropagate `share` x the loss of the responses `part`, cut to their longest response;
    shares are each part's share of the minibatch's tokens, so the parts sum to its token mean.
    first_pass: the rollout's differentiable log-probs, used instead of the policy's forward
    (valid only at the rollout's weights, i.e. before the first optimizer step)."""
    width = int(rollout.response_mask[part].sum(1).max())
    columns = slice(0, rollout.prompt_length + width)
    response_mask = rollout.response_mask[part, :width].float()  # (part, width)
    if first_pass is not None:  # cpu_fast: the rollout's own forward, its graph kept
        logprobs = first_pass.logprobs[part, :width]
    else:
        with amp():
            packed, _ = response_logprobs(
                policy,
                rollout.query_responses[part, columns],
                rollout.attention_mask[part, columns],
                rollout.responses[part, :width],
                response_mask,
                rollout.prompt_length,
                cfg.temperature,
            )
        logprobs = unpack(packed, response_mask)  # (part, width)
    # GRPO differentiates a k3 KL term; RLOO and REINFORCE++ have the KL in their advantages
    # ("loss/kl" logs the k3 term for all three; it is in the loss only with GRPO).
    loss, stats = policy_loss_with_kl(
        logprobs,
        rollout.logprobs[part, :width],
        rollout.ref_logprobs[part, :width],
        advantages[part, :width],
        response_mask,
        cfg.cliprange,
        cfg.kl_coef if cfg.estimator == "grpo" else 0.0,
    )
    (share * loss).backward()
    named = {"loss/policy": loss, "loss/kl": stats["kl_loss"], "policy/clipfrac":
             stats["clipfrac"], "policy/approx_kl": stats["approx_kl"], "policy/ratio":
             stats["ratio"]}  # fmt: skip
    return {name: share * value.item() for name, value in named.items()}


def update(
    policy: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    cfg: CriticFreeConfig,
    *,
    step: int,
    amp: Amp,
    ptx_examples: list[Example],
    pad_token_id: int,
    world: distributed.World,
) -> dict[str, list[float]]:
    """cfg.update_epochs passes over the rollout in shuffled minibatches, one optimizer step
    each; returns each minibatch's losses and statistics. Sharded, as PPO's (`minibatch_parts`)."""
    stats: dict[str, list[float]] = defaultdict(list)
    shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    responses = rollout.responses.shape[0]
    response_lengths = rollout.response_mask.sum(1)  # (responses,)
    split = not cpu_fast.gpt2_applies(policy)  # GPT-2 on cpu_fast computes real tokens only
    per_step = cfg.update_epochs * (responses // cfg.mini_batch_size)
    gradient_steps = (step - 1) * per_step
    first_pass = rollout.first_pass
    for _ in range(cfg.update_epochs):
        order = torch.randperm(responses, generator=shuffle).to(response_lengths.device)
        for minibatch in order.split(cfg.mini_batch_size):
            optimizer.zero_grad(set_to_none=True)
            minibatch_stats: dict[str, float] = defaultdict(float)
            # cpu_fast: the first step backpropagates through the rollout's forward, whole.
            parts = (
                [(minibatch, 1.0)]
                if first_pass is not None
                else minibatch_parts(minibatch, response_lengths, split, world)
            )
            for part, share in parts:
                part_stats = minibatch_backward(
                    policy, rollout, advantages, part, share, cfg, amp, first_pass
                )
                for name, value in part_stats.items():
                    minibatch_stats[name] += value
            first_pass = rollout.first_pass = None  # the weights are about to change
            minibatch_stats = over_ranks(minibatch_stats, world, response_lengths.device)
            if ptx_examples:
                minibatch_stats["loss/ptx"] = ptx_backward(
                    policy, ptx_examples, gradient_steps, cfg, pad_token_id, amp, world
                )
            if world.sharded:
                distributed.clip_grad(list(policy.parameters()), cfg.grad_clip)
            else:
                clip_grad(policy.parameters(), cfg.grad_clip)
            optimizer.step()
            gradient_steps += 1
            for name, value in minibatch_stats.items():
                stats[name].append(value)
    return stats


def step_metrics(
    rollout: Rollout,
    kl: torch.Tensor,
    advantages: torch.Tensor,
    stats: dict[str, list[float]],
    group_size: int,
) -> dict[str, float]:
    """What a step logs, with PPO's names: per-response sums for KL, token means for entropy and
    advantages, the spread of scores within a group (0: nothing to learn from), and the mean of
    each minibatch statistic."""
    response_mask = rollout.response_mask.float()  # (batch, T)
    k3 = torch.where(response_mask.bool(), kl_k3(rollout.logprobs, rollout.ref_logprobs), 0.0)
    return {
        "reward/score": rollout.scores.mean().item(),
        "reward/group_std": rollout.scores.view(-1, group_size).std(dim=1).mean().item(),
        "kl/k1": kl.sum(1).mean().item(),
        "kl/k3": k3.sum(1).mean().item(),
        "policy/entropy": masked_mean(rollout.entropy, response_mask).item(),
        "advantage/mean": masked_mean(advantages, response_mask).item(),
        "advantage/rms": masked_mean(advantages**2, response_mask).sqrt().item(),
        "response/length": response_mask.sum(1).mean().item(),
        "response/eos_rate": rollout.finished.float().mean().item(),
        **{name: sum(values) / len(values) for name, values in stats.items()},
    }


def scorer(
    models: Models,
    reward_fn: RewardFn | None,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: list[str],
) -> Scorer:
    """How a batch's responses are scored: the reward model, or the programmatic reward_fn (which
    reads the batch's prompts as the user wrote them)."""
    if models.reward_model is not None:
        return reward_model_scorer(models.reward_model)
    assert reward_fn is not None  # run() takes exactly one of the two
    return function_scorer(reward_fn, tokenizer, prompt_texts)


def save(
    cfg: CriticFreeConfig,
    models: Models,
    tokenizer: PreTrainedTokenizerBase,
    total_steps: int,
    history: list[dict[str, float]],
    world: distributed.World,
) -> dict:
    """Write the policy (LoRA merged: a plain directory), then the run's result. Sharded: every
    rank gathers the weights, rank 0 writes them as one process would."""
    policy = models.policy
    if world.sharded:
        weights = distributed.full_state_dict(policy)
        if world.main:
            cpu = resolve_precision(torch.device("cpu"), cfg.dtype,
                                    master_weights=cfg.master_weights)  # fmt: skip
            policy = load_causal_lm(cfg.policy_path, tokenizer, cpu.device, trained_role(cfg, cpu))
            policy.load_state_dict(weights)
    model_dir = Path(cfg.output_dir) / "model"
    if world.main:
        end_training(policy)
        checkpoint.write_dir_atomically(
            model_dir, lambda tmp: save_causal_lm(policy, tokenizer, tmp)
        )
    result = {
        "output_dir": str(cfg.output_dir),
        "model_dir": str(model_dir),
        "total_steps": total_steps,
        "metrics": {
            name: last_value(history, name)
            for name in ("reward/score", "kl/k1", "kl/k3", "policy/entropy", "response/eos_rate")
        },
        "history": history,
    }
    if world.main:
        checkpoint.write_result(cfg.output_dir, result)
    return result


# A launcher finds a stage's config class beside its run(): training.engine.critic_free.Config.
Config = CriticFreeConfig


def run(
    cfg: CriticFreeConfig,
    data: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    reward_fn: RewardFn | None = None,
) -> dict:
    return start_online(
        "critic-free RL", cfg, reward_fn,
        lambda world, device: _train(cfg, data, world, device, on_progress, reward_fn),
    )  # fmt: skip


def _train(
    cfg: CriticFreeConfig,
    data: dict[str, Any],
    world: distributed.World,
    device: torch.device,
    on_progress: ProgressFn | None,
    reward_fn: RewardFn | None,
) -> dict:
    """Critic-free RL in this process; in several, as PPO's (ppo._train): the policy sharded,
    the frozen models whole on every rank, each rank samples and scores every world.size-th
    response of a step, every rank holds the whole rollout (the groups' baselines need all of
    it) and trains on its part of each minibatch."""
    seed_everything(cfg.seed)
    precision = resolve_precision(
        device, cfg.dtype, master_weights=cfg.master_weights, frozen_dtype=cfg.frozen_dtype
    )
    amp = precision.amp
    tokenizer = load_tokenizer(cfg.policy_path)
    models = load_models(cfg, tokenizer, precision)
    if world.sharded:
        distributed.shard(models.policy)
    part = (world.rank, world.size) if world.sharded else None
    sampler = BuiltinSampler(models.policy, tokenizer, amp, compile=cfg.compile)

    prompts = [prompt_of(record) for record in data["prompts"]]
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.max_prompt_length)
    prompt_texts = [user_text(p) for p in prompts]
    ptx_examples = []
    if cfg.ptx_coef > 0:
        ptx_examples = encode_demonstrations(tokenizer, data["demonstrations"], cfg.ptx_max_length)

    total_steps = cfg.total_episodes // cfg.batch_size
    optimizer: torch.optim.Optimizer = torch.optim.Adam(
        trainable_parameters(models.policy), lr=cfg.lr, fused=not world.sharded
    )
    optimizers = {"optimizer": optimizer}
    start, history = checkpoint.resume_history(
        cfg.output_dir, models=models.trained(), optimizers=optimizers
    )
    held_out = hold_out(
        sampler, partial(scorer, models, reward_fn, tokenizer), prompt_ids, prompt_texts, wanted=cfg.eval_prompts,
        resumed=start > 0, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, batch_size=cfg.batch_size * cfg.group_size,
    )  # fmt: skip
    for step in range(start + 1, total_steps + 1):
        # Rollout: each prompt of the batch group_size times, in contiguous groups.
        indices = batch_for_step(held_out.train, step - 1, cfg.batch_size, cfg.seed)
        repeated = [i for i in indices for _ in range(cfg.group_size)]
        mine = repeated[world.rank :: world.size]
        rollout, timings = make_rollout(
            models.policy,
            models.reference,
            None,  # no value model
            scorer(models, reward_fn, tokenizer, [prompt_texts[i] for i in mine]),
            [prompt_ids[i] for i in repeated],
            sampler=sampler,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=cfg.seed * 1_000_003 + step,
            amp=amp,
            # cpu_fast: the first gradient step backpropagates through the rollout's forward.
            keep_graph=not world.sharded
            and reuse_first_pass.applies(device, len(repeated), cfg.mini_batch_size),
            part=part,
        )
        if world.sharded:  # every rank gets the whole batch's responses, groups whole
            rollout = gather(rollout, world, tokenizer.pad_token_id)
        # Advantages from the group's scores and the k1 KL to the reference per token.
        scoring_started = time.perf_counter()
        with torch.no_grad():
            response_mask = rollout.response_mask.float()  # (batch x K, T)
            kl = torch.where(
                response_mask.bool(), kl_penalty(rollout.logprobs, rollout.ref_logprobs), 0.0
            )
            scores = penalised_scores(rollout.scores, rollout.finished, cfg.missing_eos_penalty)
            advantages = critic_free_advantages(
                cfg.estimator, scores, response_mask, kl, group_size=cfg.group_size,
                kl_coef=cfg.kl_coef,
            )  # fmt: skip
        timings["time/scoring"] += time.perf_counter() - scoring_started
        update_started = time.perf_counter()
        stats = update(
            models.policy, optimizer, rollout, advantages, cfg, step=step, amp=amp,
            ptx_examples=ptx_examples, pad_token_id=tokenizer.pad_token_id, world=world,
        )  # fmt: skip
        timings["time/update"] = time.perf_counter() - update_started
        metrics = {**step_metrics(rollout, kl, advantages, stats, cfg.group_size), **timings}
        if step == start + 1:
            metrics |= held_out.before
        if held_out.evaluate is not None and step == total_steps:
            metrics["eval/score"] = held_out.evaluate()
        history.append({"step": step, **metrics})
        checkpoint.save_if_due(
            cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
            models=models.trained(), optimizers=optimizers, history=history, world=world,
        )  # fmt: skip
        if on_progress is not None and world.main:
            on_progress(step, total_steps, metrics)
    return save(cfg, models, tokenizer, total_steps, history, world)
