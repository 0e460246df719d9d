"""PPO against the reward model with a per-token KL penalty to the SFT model (InstructGPT step 3).

The recipe of lm-human-preferences (Ziegler et al. 2019) as reproduced in
https://github.com/vwxyzjn/lm-human-preference-details and "The N+ implementation details of RLHF
with PPO" (Huang et al. 2024):
  - policy and frozen reference both start as the SFT model; the value model starts as the reward
    model (trunk + head) and is a separate network;
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
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.engine import checkpoint
from training.engine.config import PPOConfig
from training.engine.cpu_fast import gpt2
from training.engine.cpu_fast.threads import SideBySide, in_order
from training.engine.data import (
    batch_for_step,
    collate_prompts,
    collate_sft,
    encode_demonstrations,
    encode_prompts,
    prompt_of,
    user_text,
)
from training.engine.generation import sample
from training.engine.lm import (
    disable_dropout,
    freeze,
    load_causal_lm,
    load_tokenizer,
    response_logits,
    save_causal_lm,
)
from training.engine.losses import (
    at_temperature,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_k3,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from training.engine.optim import clip_grad
from training.engine.precision import (
    Amp,
    autocast,
    resolve_device,
    resolve_dtype,
    seed_everything,
    to_device,
)
from training.engine.progress import ProgressFn, last_value
from training.engine.reward_model import RewardModel
from training.engine.sft import response_loss

# (prompts as the user wrote them, decoded responses without EOS) -> one score per response
RewardFn = Callable[[list[str], list[str]], list[float]]


@dataclass
class Rollout:
    """One batch of episodes; T response tokens, predicted at positions prompt_length-1 .. end-1."""

    query_responses: torch.Tensor  # (batch, prompt_length + T) left-padded prompt, then response
    attention_mask: torch.Tensor  # (batch, prompt_length + T) 0 on prompt pad and after EOS
    responses: torch.Tensor  # (batch, T)
    response_mask: torch.Tensor  # (batch, T) 1 up to and including EOS
    finished: torch.Tensor  # (batch,) response ended with EOS
    prompt_length: int
    logprobs: torch.Tensor  # (batch, T) log pi_old(token) at the sampling temperature
    ref_logprobs: torch.Tensor  # (batch, T)
    values: torch.Tensor  # (batch, T) V(state before each response token)
    scores: torch.Tensor  # (batch,) raw reward-model / reward_fn score
    entropy: torch.Tensor  # (batch, T)
    first_pass: FirstPass | None = None  # with keep_graph: logprobs and values, differentiable


@dataclass
class FirstPass:
    """The rollout's policy log-probs and values with their autograd graphs. The first gradient
    step of the first PPO epoch is taken at the weights the rollout was scored with: when its
    minibatch is the whole batch, it backpropagates through these instead of running the same
    policy and value forwards again."""

    logprobs: torch.Tensor  # (batch, T) requires grad; 0 after EOS
    values: torch.Tensor  # (batch, T)


def unpack(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Values for the set entries of `mask` (row-major, as `response_logits` returns them) laid out
    like the mask, 0 elsewhere.  # mask.shape"""
    return packed.new_zeros(mask.shape).masked_scatter(mask.bool(), packed)


def masked_response_logprobs(
    model: PreTrainedModel,
    query_responses: torch.Tensor,
    attention_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    prompt_length: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the real response tokens (where response_mask is set), computed on the real
    tokens only, under the distribution they were sampled from: (log-probs, logits / temperature).  # (response_mask.sum(),), (..., vocab)"""
    mask = response_mask.bool()
    logits = at_temperature(
        response_logits(model, query_responses, attention_mask, prompt_length, mask), temperature
    )
    return logprobs_from_logits(logits, responses[mask]), logits


def make_rollout(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    value_model: RewardModel,
    score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    prompts: dict[str, torch.Tensor],
    cfg: PPOConfig,
    tokenizer: PreTrainedTokenizerBase,
    generator: torch.Generator,
    amp: Amp,
    keep_graph: bool = False,
    side: SideBySide | None = None,
) -> tuple[Rollout, dict[str, float]]:
    """Sample responses, then one forward each of policy, reference, value model and reward.
    keep_graph: run the policy and value forwards with autograd and keep them (`first_pass`)."""
    started = time.perf_counter()
    with torch.inference_mode(), amp(), side.alone() if side else nullcontext():
        generation = sample(
            policy,
            prompts["input_ids"],
            prompts["attention_mask"],
            max_new_tokens=cfg.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=cfg.temperature,
            generator=generator,
        )
    generated = time.perf_counter()
    prompt_length = prompts["input_ids"].shape[1]
    # Plain tensors (not inference-mode ones), so that a forward with autograd can save them.
    responses, mask = generation.tokens.clone(), generation.response_mask.clone()
    query_responses = torch.cat([prompts["input_ids"], responses], dim=1)
    attention_mask = torch.cat([prompts["attention_mask"], mask], dim=1)

    # Log-probs, entropies and values at the real response tokens only, computed on the real
    # tokens only; laid out (batch, T) with 0 after EOS, where every use masks them out. The
    # trained models' forwards and the frozen ones' run side by side (SideBySide).
    logprobs_of = partial(
        masked_response_logprobs,
        query_responses=query_responses,
        attention_mask=attention_mask,
        responses=responses,
        response_mask=mask,
        prompt_length=prompt_length,
        temperature=cfg.temperature,
    )

    def trained() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(keep_graph), amp():
            logprobs, logits = logprobs_of(policy)
            values = value_model.response_values(
                query_responses, attention_mask, prompt_length, mask
            )
        return logprobs, logits, values

    def frozen() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), amp():
            ref_logprobs, _ = logprobs_of(reference)
            return ref_logprobs, score(query_responses, attention_mask, responses)

    (logprobs, logits, values), (ref_logprobs, scores) = (side or in_order)(trained, frozen)
    first_pass = FirstPass(unpack(logprobs, mask), unpack(values.float(), mask))
    with torch.inference_mode():
        entropy = entropy_from_logits(logits.detach())
    rollout = Rollout(
        query_responses=query_responses,
        attention_mask=attention_mask,
        responses=responses,
        response_mask=mask,
        finished=generation.finished.clone(),
        prompt_length=prompt_length,
        logprobs=first_pass.logprobs.detach(),
        ref_logprobs=unpack(ref_logprobs, mask),
        values=first_pass.values.detach(),
        scores=scores.float(),
        entropy=unpack(entropy, mask),
        first_pass=first_pass if keep_graph else None,
    )
    timings = {
        "time/generation": generated - started,
        "time/scoring": time.perf_counter() - generated,
    }
    return rollout, timings


def token_rewards(
    rollout: Rollout, kl_coef: float, missing_eos_penalty: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token k1 KL): -beta * KL on every token, plus the (penalised) score
    on the last response token.  # (batch, T)"""
    mask = rollout.response_mask.bool()
    kl = torch.where(mask, kl_penalty(rollout.logprobs, rollout.ref_logprobs), 0.0)
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
    mask = batch.response_mask[part, :width]
    responses = batch.responses[part, :width]

    def policy_side() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if first_pass is not None:
            logprobs = first_pass.logprobs[part, :width]
        else:
            with amp():
                logprobs, _ = masked_response_logprobs(
                    policy,
                    query_responses,
                    attention_mask,
                    responses,
                    mask,
                    batch.prompt_length,
                    cfg.temperature,
                )
            logprobs = unpack(logprobs, mask)
        loss, loss_stats = ppo_policy_loss(
            logprobs,
            batch.old_logprobs[part, :width],
            batch.advantages[part, :width],
            mask,
            cfg.cliprange,
        )
        (share * loss).backward()
        return loss, loss_stats

    def value_side() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if first_pass is not None:
            values = first_pass.values[part, :width]
        else:
            with amp():
                values = value_model.response_values(
                    query_responses, attention_mask, batch.prompt_length, mask
                )
            values = unpack(values.float(), mask)
        loss, loss_stats = ppo_value_loss(
            values,
            batch.old_values[part, :width],
            batch.returns[part, :width],
            mask,
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


# A launcher finds a stage's config class beside its run(): training.engine.ppo.Config.
Config = PPOConfig


def run(
    cfg: PPOConfig,
    data: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    reward_fn: RewardFn | None = None,
) -> dict:
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    if (reward_fn is None) == (cfg.reward_model_path is None):
        raise ValueError("PPO needs exactly one of cfg.reward_model_path and reward_fn")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    amp = partial(autocast, device, resolve_dtype(cfg.dtype, device))
    tokenizer = load_tokenizer(cfg.policy_path)
    policy = load_causal_lm(cfg.policy_path, tokenizer, device)
    reference = freeze(load_causal_lm(cfg.policy_path, tokenizer, device))
    value_init = cfg.value_model_path or cfg.reward_model_path
    if value_init is not None:
        value_model = RewardModel.from_pretrained(value_init, tokenizer, device)
    else:  # a programmatic reward: the value head starts fresh on the SFT trunk
        value_model = RewardModel.from_causal_lm(cfg.policy_path, tokenizer, device)
    reward_model = None
    if cfg.reward_model_path is not None:
        reward_model = freeze(RewardModel.from_pretrained(cfg.reward_model_path, tokenizer, device))
    for model in (policy, reference, value_model, reward_model):
        if model is not None:
            disable_dropout(model)

    prompts = [prompt_of(record) for record in data["prompts"]]
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.max_prompt_length)
    prompt_texts = [user_text(p) for p in prompts]
    ptx_examples = []
    if cfg.ptx_coef > 0:
        ptx_examples = encode_demonstrations(tokenizer, data["demonstrations"], cfg.ptx_max_length)

    def score(query_responses, attention_mask, responses, indices):
        if reward_model is not None:
            return reward_model(query_responses, attention_mask)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        values = reward_fn([prompt_texts[i] for i in indices], texts)
        return torch.tensor(values, dtype=torch.float32, device=device)

    total_steps = cfg.total_episodes // cfg.batch_size
    optimizer = torch.optim.Adam(
        [
            {"params": policy.parameters(), "lr": cfg.lr},
            {"params": value_model.parameters(), "lr": cfg.value_lr},
        ],
        eps=cfg.adam_eps,
        fused=True,
    )
    models = {"policy": policy, "value_model": value_model}
    state = checkpoint.resume(cfg.output_dir, models=models, optimizers={"optimizer": optimizer})
    start = state["step"] if state else 0
    history: list[dict[str, float]] = state["history"] if state else []

    # The policy's and the value model's passes run side by side on a multi-core CPU.
    with SideBySide(device).running() as side:
        for step in range(start + 1, total_steps + 1):
            # 1. Rollout: sample a response per prompt, score it, evaluate log-probs and values.
            indices = batch_for_step(range(len(prompts)), step - 1, cfg.batch_size, cfg.seed)
            batch_prompts = to_device(
                collate_prompts([prompt_ids[i] for i in indices], tokenizer.pad_token_id), device
            )
            generator = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)
            rollout, timings = make_rollout(
                policy,
                reference,
                value_model,
                partial(score, indices=indices),
                batch_prompts,
                cfg,
                tokenizer,
                generator,
                amp,
                # The first gradient step sees the rollout's weights; if its minibatch is the whole
                # batch, it backpropagates through the rollout's policy and value forwards.
                keep_graph=cfg.mini_batch_size == cfg.batch_size,
                side=side,
            )

            # 2. Rewards and advantages (no gradients; still timed as scoring).
            scoring_started = time.perf_counter()
            with torch.no_grad():
                mask = rollout.response_mask.float()
                rewards, kl = token_rewards(rollout, cfg.kl_coef, cfg.missing_eos_penalty)
                advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
                if cfg.whiten_advantages:
                    advantages = masked_whiten(advantages, mask)
                # The rollout's tensors are plain ones (make_rollout), so autograd can save them.
                batch = UpdateBatch(
                    query_responses=rollout.query_responses,
                    attention_mask=rollout.attention_mask,
                    responses=rollout.responses,
                    response_mask=mask,
                    old_logprobs=rollout.logprobs,
                    old_values=rollout.values,
                    advantages=advantages,
                    returns=returns,
                    prompt_length=rollout.prompt_length,
                )
            timings["time/scoring"] += time.perf_counter() - scoring_started

            # 3. PPO epochs over minibatches of the rollout.
            update_started = time.perf_counter()
            stats: dict[str, list[float]] = defaultdict(list)
            shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            episodes = batch.query_responses.shape[0]
            response_lengths = rollout.response_mask.sum(1)  # (batch,)
            # GPT-2 computes real tokens only: there is no padding left for length parts to save.
            split = not (gpt2.supports(policy) and gpt2.supports(value_model.trunk))
            gradient_steps = (step - 1) * cfg.ppo_epochs * (cfg.batch_size // cfg.mini_batch_size)
            first_pass = rollout.first_pass
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(episodes, generator=shuffle).to(device)
                for mb in order.split(cfg.mini_batch_size):
                    optimizer.zero_grad(set_to_none=True)
                    minibatch_stats: dict[str, float] = defaultdict(float)
                    parts = (
                        [(mb, 1.0)]
                        if first_pass is not None
                        else length_parts(mb, response_lengths, split)
                    )
                    for part, share in parts:
                        part_stats = backward_part(
                            policy, value_model, batch, part, share, cfg, amp, first_pass, side
                        )
                        for name, value in part_stats.items():
                            minibatch_stats[name] += value
                    first_pass = rollout.first_pass = None  # the weights are about to change
                    if ptx_examples:
                        # PPO-ptx: keep the demonstrations' likelihood (InstructGPT eq. 2, gamma_ptx).
                        demos = batch_for_step(
                            ptx_examples, gradient_steps, cfg.ptx_batch_size, cfg.seed
                        )
                        ptx_batch = to_device(collate_sft(demos, tokenizer.pad_token_id), device)
                        with amp():
                            ptx_loss = response_loss(policy, ptx_batch)
                        (cfg.ptx_coef * ptx_loss).backward()
                        minibatch_stats["loss/ptx"] = ptx_loss.item()
                    clip_grad(policy.parameters(), cfg.grad_clip)
                    clip_grad(value_model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    gradient_steps += 1
                    for name, value in minibatch_stats.items():
                        stats[name].append(value)
            timings["time/update"] = time.perf_counter() - update_started

            # 4. Log: per-sequence sums for KL, token means for entropy.
            metrics = {
                "reward/score": rollout.scores.mean().item(),
                "reward/total": rewards.sum(1).mean().item(),
                "kl/k1": kl.sum(1).mean().item(),
                "kl/k3": torch.where(
                    rollout.response_mask.bool(),
                    kl_k3(rollout.logprobs, rollout.ref_logprobs),
                    0.0,
                )
                .sum(1)
                .mean()
                .item(),
                "policy/entropy": masked_mean(rollout.entropy, mask).item(),
                "value/explained_variance": explained_variance(
                    rollout.values, returns, mask
                ).item(),
                "response/length": mask.sum(1).mean().item(),
                "response/eos_rate": rollout.finished.float().mean().item(),
                **{name: sum(values) / len(values) for name, values in stats.items()},
                **timings,
            }
            history.append({"step": step, **metrics})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                checkpoint.save_checkpoint(
                    cfg.output_dir,
                    step,
                    models=models,
                    optimizers={"optimizer": optimizer},
                    state={"history": history},
                )
            if on_progress is not None:
                on_progress(step, total_steps, metrics)

    model_dir = Path(cfg.output_dir) / "model"
    value_dir = Path(cfg.output_dir) / "value_model"
    checkpoint.write_dir_atomically(model_dir, lambda tmp: save_causal_lm(policy, tokenizer, tmp))
    checkpoint.write_dir_atomically(
        value_dir, lambda tmp: value_model.save_pretrained(tmp, tokenizer)
    )
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
    checkpoint.write_result(cfg.output_dir, result)
    return result
