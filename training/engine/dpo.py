"""Direct preference optimisation on labeler rankings (Rafailov et al. 2023): the policy learns
from the rankings themselves, with no reward model and no sampling during training.

Every strictly ordered pair of a ranking (all C(K,2), ties dropped) is a (chosen, rejected) pair.
As for InstructGPT's reward model, a ranking is one batch element: its K completions go through
the policy once and give all its pairs, and each ranking weighs the same whatever its number of
pairs. The frozen reference is the starting policy; its log-probs are computed once, before the
first step (they never change), so a step costs one policy forward and backward.
Run by several processes (training/engine/distributed.py), the policy is sharded with FSDP2, the
reference held whole by every rank while its log-probs are computed (each rank its share, then
gathered), and each rank trains on every N-th ranking of each batch: the loss, gradients and
clip are those of the whole batch.
data: {"rankings": [{"prompt", "completions", "ranks"}, ...]}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from training.engine import checkpoint, distributed
from training.engine.config import DPOConfig
from training.engine.data import (
    EncodedRanking,
    Example,
    batch_for_step,
    chunks,
    collate_sft,
    encode_rankings,
    split_train_val,
    steps_per_epoch,
)
from training.engine.lm import (
    disable_dropout,
    end_training,
    frozen_role,
    load_causal_lm,
    load_tokenizer,
    logits_where,
    save_causal_lm,
    trainable_parameters,
    trained_role,
)
from training.engine.losses import IGNORE_INDEX, dpo_loss, logprobs_from_logits, preference_pairs
from training.engine.memory import adapters_disabled
from training.engine.optim import clip_grad, set_lr, warmup_factor
from training.engine.precision import (
    Amp,
    resolve_device,
    resolve_precision,
    seed_everything,
    to_device,
)
from training.engine.progress import ProgressFn, last_value


def sequence_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(response | prompt) of each row: its response tokens' log-probs, summed.  # (batch,)"""
    targets = batch["labels"][:, 1:]  # position i predicts token i + 1
    select = torch.zeros_like(batch["labels"], dtype=torch.bool)
    select[:, :-1] = targets != IGNORE_INDEX  # (batch, seq)
    logits = logits_where(model, batch["input_ids"], batch["attention_mask"], select)
    token_logprobs = logprobs_from_logits(logits, targets[targets != IGNORE_INDEX])  # (n_tokens,)
    rows = select.nonzero()[:, 0]  # the row of each selected position, row-major like the logits
    return token_logprobs.new_zeros(select.shape[0]).index_add(0, rows, token_logprobs)


def completion_logprobs(
    model: PreTrainedModel, rankings: list[EncodedRanking], pad_token_id: int, amp: Amp
) -> torch.Tensor:
    """Every completion of the rankings through the model in one batch, ranking by ranking.
    # (sum K,)"""
    device = next(model.parameters()).device
    examples = [Example(r.prompt + c, len(r.prompt)) for r in rankings for c in r.completions]
    with amp():
        return sequence_logprobs(model, to_device(collate_sft(examples, pad_token_id), device))


def ranking_pair_loss(
    logratios: torch.Tensor, rankings: list[EncodedRanking], cfg: DPOConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's DPO loss, each ranking's pairs averaged and then the rankings, and every pair's
    implicit reward margin. logratios: (sum K,) in the rankings' order.  # (), (pairs,)"""
    chosen, rejected, weights = [], [], []
    offset = 0
    for ranking in rankings:
        pairs = preference_pairs(ranking.ranks)
        chosen += [offset + better for better, _ in pairs]
        rejected += [offset + worse for _, worse in pairs]
        weights += [1.0 / (len(pairs) * len(rankings))] * len(pairs)
        offset += len(ranking.completions)
    index = partial(torch.tensor, device=logratios.device)
    losses, margins = dpo_loss(
        logratios[index(chosen)], logratios[index(rejected)], cfg.beta, cfg.label_smoothing
    )
    return (losses * index(weights)).sum(), margins


def rank_part(group: list[int], world: distributed.World) -> tuple[list[int], float]:
    """This rank's rankings of a global batch (every world.size-th) and its share of the batch
    (each ranking weighs the same). A rank left with none (a batch smaller than the world: an
    epoch's last) runs the batch's first ranking weighted 0, since a sharded model's forwards
    and backwards are collectives that every rank joins. One process: the whole batch, 1."""
    mine = group[world.rank :: world.size]
    if not mine:
        return group[:1], 0.0
    return mine, len(mine) / len(group)


@torch.inference_mode()
def reference_logprobs(
    model: PreTrainedModel, rankings: list[EncodedRanking], cfg: DPOConfig, pad: int, amp: Amp,
    world: distributed.World,
) -> list[torch.Tensor]:  # fmt: skip
    """The frozen reference's log-prob of each ranking's completions, computed once. In several
    processes each rank computes every world.size-th ranking's and all gather them: this pass
    over every ranking costs about a third of an epoch, which N ranks then share (the reference
    is not sharded: its forwards are no collectives).  # per ranking (K,)"""
    out: list[torch.Tensor] = []
    for group in chunks(rankings[world.rank :: world.size], cfg.batch_size):
        flat = completion_logprobs(model, list(group), pad, amp).float()
        out += list(flat.split([len(r.completions) for r in group]))
    if not world.sharded:
        return out
    # Rows of K_max (NaN-padded), as many on every rank; gathered back in the rankings' order.
    device = next(model.parameters()).device
    widest = max(len(r.completions) for r in rankings)
    table = torch.full((-(-len(rankings) // world.size), widest), torch.nan, device=device)
    for row, logprobs in enumerate(out):
        table[row, : len(logprobs)] = logprobs
    every = distributed.gather_rows(table, world)
    return [every[i, : len(r.completions)] for i, r in enumerate(rankings)]


def backward(
    policy: PreTrainedModel, group: list[int], rankings: list[EncodedRanking],
    ref: list[torch.Tensor], cfg: DPOConfig, pad: int, amp: Amp, world: distributed.World,
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Backpropagate the DPO loss of a global batch (`group`: rankings' indices): in one process
    all of it; in several, this rank's part (rank_part) weighted by its share of the rankings
    times world.size, so that the gradients FSDP averages over the ranks are the whole batch's.
    Returns the whole batch's loss, pair accuracy and mean margin (summed over the ranks)."""
    mine, share = rank_part(group, world)
    batch = [rankings[i] for i in mine]
    logprobs = completion_logprobs(policy, batch, pad, amp).float()  # (sum K,)
    loss, margins = ranking_pair_loss(logprobs - torch.cat([ref[i] for i in mine]), batch, cfg)
    (loss * (share * world.size) if world.sharded else loss).backward()
    margins = margins.detach()
    counted = float(share > 0)  # a rank's stand-in ranking counts for nothing
    sums = {
        "loss": share * loss.item(),
        "correct": counted * float((margins > 0).sum()),
        "pairs": counted * len(margins),
        "margin": counted * float(margins.sum()),
    }
    if world.sharded:
        sums = distributed.all_sum_each(sums, device)
    return {
        "train/loss": sums["loss"],
        "train/pair_accuracy": sums["correct"] / sums["pairs"],
        "train/margin": sums["margin"] / sums["pairs"],
    }


@torch.inference_mode()
def evaluate(
    policy: PreTrainedModel, val: list[int], rankings: list[EncodedRanking],
    ref: list[torch.Tensor], cfg: DPOConfig, pad: int, amp: Amp, world: distributed.World,
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Held-out loss (mean over rankings) and implicit-reward accuracy (over all untied pairs).
    In several processes each batch of the held-out rankings is split as a training batch is
    (every rank runs as many forwards), and the sums are summed over the ranks."""
    policy.eval()
    sums = {"loss": 0.0, "correct": 0.0, "pairs": 0.0}
    for group in chunks(val, cfg.batch_size):
        mine, share = rank_part(list(group), world)
        batch = [rankings[i] for i in mine]
        logratios = completion_logprobs(policy, batch, pad, amp).float() - torch.cat(
            [ref[i] for i in mine]
        )
        loss, margins = ranking_pair_loss(logratios, batch, cfg)
        counted = float(share > 0)
        sums["loss"] += float(loss) * len(batch) * counted
        sums["correct"] += counted * int((margins > 0).sum())
        sums["pairs"] += counted * len(margins)
    if world.sharded:
        sums = distributed.all_sum_each(sums, device)
    policy.train()
    return {
        "val/loss": sums["loss"] / len(val),
        "val/pair_accuracy": sums["correct"] / max(sums["pairs"], 1),
    }


# A launcher finds a stage's config class beside its run(): training.engine.dpo.Config.
Config = DPOConfig


def run(cfg: DPOConfig, data: dict[str, Any], *, on_progress: ProgressFn | None = None) -> dict:
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    with distributed.process_group(resolve_device(cfg.device), cfg.collective_timeout_s) as (
        world,
        device,
    ):
        if world.sharded and cfg.lora_rank > 0:  # asked of the worker's setting, not the config
            raise ValueError(f"DPO in {world.size} processes: LoRA trains in one process")
        return _train(cfg, data, world, device, on_progress)


def _train(
    cfg: DPOConfig,
    data: dict[str, Any],
    world: distributed.World,
    device: torch.device,
    on_progress: ProgressFn | None,
) -> dict:
    seed_everything(cfg.seed)
    precision = resolve_precision(
        device, cfg.dtype, master_weights=cfg.master_weights, frozen_dtype=cfg.frozen_dtype
    )
    amp = precision.amp
    tokenizer = load_tokenizer(cfg.model_path)
    role = trained_role(cfg, precision)
    policy = load_causal_lm(cfg.model_path, tokenizer, device, role)
    disable_dropout(policy)  # the log-ratios must compare deterministic functions
    if world.sharded:  # before the reference is loaded: one whole copy at a time
        distributed.shard(policy)
    pad = tokenizer.pad_token_id

    encoded = encode_rankings(tokenizer, data["rankings"], cfg.max_length)
    rankings = [
        r for r in encoded if preference_pairs(r.ranks)
    ]  # an all-tied ranking teaches nothing
    train, val = split_train_val(list(range(len(rankings))), cfg.val_fraction, cfg.seed)
    if not train:
        raise ValueError("DPO needs at least one training ranking with an untied pair")
    # The frozen reference, dropped once its log-probs are computed; with LoRA, the untrained
    # policy without its adapters (one copy of the base weights, as TRL does).
    reference = policy
    if role.lora is None:
        reference = load_causal_lm(cfg.model_path, tokenizer, device, frozen_role(precision))
    with adapters_disabled(reference):
        ref = reference_logprobs(reference, rankings, cfg, pad, amp, world)
    del reference
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch(len(train), cfg.batch_size)
    # fused: one kernel for the whole update (sharded DTensor parameters take the foreach path).
    optimizer = torch.optim.AdamW(
        trainable_parameters(policy), lr=cfg.lr, weight_decay=cfg.weight_decay,
        fused=not world.sharded,
    )  # fmt: skip
    start, history = checkpoint.resume_history(
        cfg.output_dir, models={"model": policy}, optimizers={"optimizer": optimizer}
    )

    policy.train()
    for step in range(start + 1, total_steps + 1):
        group = batch_for_step(train, step - 1, cfg.batch_size, cfg.seed)
        lr = cfg.lr * warmup_factor(step, cfg.warmup_steps)
        set_lr(optimizer, lr)

        optimizer.zero_grad(set_to_none=True)
        metrics = backward(policy, group, rankings, ref, cfg, pad, amp, world, device)
        if world.sharded:
            grad_norm = distributed.clip_grad(list(policy.parameters()), cfg.grad_clip)
        else:
            grad_norm = clip_grad(policy.parameters(), cfg.grad_clip)
        optimizer.step()

        metrics |= {"train/grad_norm": grad_norm, "lr": lr}
        if val and (step % cfg.eval_every == 0 or step == total_steps):
            metrics |= evaluate(policy, val, rankings, ref, cfg, pad, amp, world, device)
        history.append({"step": step, **metrics})
        checkpoint.save_if_due(
            cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
            models={"model": policy}, optimizers={"optimizer": optimizer}, history=history,
            world=world,
        )  # fmt: skip
        if on_progress is not None and world.main:
            on_progress(step, total_steps, metrics)

    end_training(policy)  # LoRA merged: the model version is a plain HF directory
    model_dir = Path(cfg.output_dir) / "model"
    if world.sharded:  # gathered on rank 0 into a plain copy of the model, saved as one process
        weights = distributed.full_state_dict(policy)
        if world.main:
            policy = load_causal_lm(cfg.model_path, tokenizer, torch.device("cpu"), role)
            policy.load_state_dict(weights)
    if world.main:
        checkpoint.write_dir_atomically(
            model_dir, lambda tmp: save_causal_lm(policy, tokenizer, tmp)
        )
    result = {
        "output_dir": str(cfg.output_dir),
        "model_dir": str(model_dir),
        "total_steps": total_steps,
        "metrics": {
            name: last_value(history, name)
            for name in ("train/loss", "val/loss", "val/pair_accuracy", "train/margin")
        }
        | {"train_rankings": len(train), "val_rankings": len(val)},
        "history": history,
    }
    if world.main:
        checkpoint.write_result(cfg.output_dir, result)
    return result
