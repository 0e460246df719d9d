"""Reward model on labeler rankings (InstructGPT step 2).

Each ranking of K completions is one batch element: its K completions go through the model in the
same forward and give all C(K,2) comparisons, so the K forwards are not repeated per pair and one
ranking's correlated pairs cannot overfit the model across batches (Ouyang et al. 2022, sec. 3.5).
After training, a score offset makes the demonstrations score 0 on average, so PPO starts from
centred rewards; it is saved in the model's config, since the bias-free head has no bias to hold it.
data: {"rankings": [{"prompt", "completions", "ranks"}, ...], "demonstrations": [...] (optional)}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule

from training.engine import checkpoint, distributed
from training.engine.config import RewardConfig
from training.engine.data import (
    EncodedRanking,
    batch_for_step,
    chunks,
    collate_rankings,
    collate_sft,
    encode_demonstrations,
    encode_rankings,
    fold_scores,
    split_rankings,
    steps_per_epoch,
)
from training.engine.lm import (
    end_training,
    load_tokenizer,
    take_role,
    trainable_parameters,
    trained_role,
)
from training.engine.losses import pair_accuracy, ranking_loss, ranking_pairs
from training.engine.memory import is_checkpointing
from training.engine.optim import clip_grad, set_lr, warmup_factor
from training.engine.precision import (
    Amp,
    resolve_device,
    resolve_precision,
    seed_everything,
    to_device,
)
from training.engine.progress import ProgressFn, last_value
from training.engine.reward_model import RewardModel


def score_rankings(
    model: RewardModel, batch: dict[str, torch.Tensor], amp: Amp
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, scores): one forward over every completion of every ranking in the batch, each
    ranking's prompt computed once for its K completions (whole sequences under activation
    checkpointing, which keeps no cache in training, and when sharded, through the root's
    forward, which gathers the weights)."""
    with amp():
        if isinstance(model, FSDPModule) or (model.training and is_checkpointing(model.trunk)):
            flat_scores = model(*whole_sequences(batch))
        else:
            flat_scores = model.score_completions(
                batch["prompt_ids"],
                batch["prompt_mask"],
                batch["completion_ids"],
                batch["completion_mask"],
                batch["ranking_index"],
            )  # (sum K,)
    scores = fold_scores(flat_scores, batch["valid"])  # (groups, K_max)
    loss, _ = ranking_loss(scores, batch["ranks"], batch["valid"])
    return loss, scores


def backward_sharded(
    model: RewardModel,
    rankings: list[EncodedRanking],
    pad_token_id: int,
    amp: Amp,
    world: distributed.World,
    device: torch.device,
) -> tuple[float, int, int]:
    """This rank's part of a global batch of rankings (every world.size-th): backpropagate its
    loss weighted by its share of the batch's rankings that have a pair, so that the gradients
    FSDP averages are those of the whole batch's mean; returns the batch's loss, correctly
    ordered pairs and pairs, summed over the ranks. Whole sequences through the root's forward
    (which gathers the sharded weights), as under activation checkpointing."""
    everything = collate_rankings(rankings, pad_token_id)
    counted = int((ranking_pairs(everything["ranks"], everything["valid"]).sum((-1, -2)) > 0).sum())
    batch = to_device(collate_rankings(rankings[world.rank :: world.size], pad_token_id), device)
    with amp():
        flat_scores = model(*whole_sequences(batch))
    scores = fold_scores(flat_scores, batch["valid"])  # (groups, K_max)
    loss, per_ranking = ranking_loss(scores, batch["ranks"], batch["valid"])
    mine = int((ranking_pairs(batch["ranks"], batch["valid"]).sum((-1, -2)) > 0).sum())
    if mine == 0:  # no pair here: a zero loss that still runs the backward's collectives
        loss = scores.sum() * 0.0
    share = mine / max(counted, 1)
    (loss * (share * world.size)).backward()  # FSDP's reduce-scatter divides by world.size
    correct, pairs = pair_accuracy(scores.detach(), batch["ranks"], batch["valid"])
    return (
        distributed.all_sum(share * loss.item(), device),
        int(distributed.all_sum(int(correct), device)),
        int(distributed.all_sum(int(pairs), device)),
    )


def whole_sequences(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each completion after its (left-padded) prompt: input_ids and attention_mask, padded on
    both sides, which `RewardModel.forward` reads at the last real token.  # (sum K, P + T) x 2"""
    index = batch["ranking_index"]
    input_ids = torch.cat([batch["prompt_ids"][index], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"][index], batch["completion_mask"]], dim=1)
    return input_ids, attention_mask


@torch.inference_mode()
def evaluate(
    model: RewardModel, rankings: list[EncodedRanking], batch_size: int, pad_token_id: int, amp: Amp
) -> dict[str, float]:
    """Held-out loss (mean over rankings), pair accuracy (over all untied pairs), and how many
    pairs and rankings that is: a rate means little without its n (labeling/stats.py gives it
    its interval)."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, pairs = 0.0, 0, 0
    for group in chunks(rankings, batch_size):
        batch = to_device(collate_rankings(group, pad_token_id), device)
        loss, scores = score_rankings(model, batch, amp)
        loss_sum += float(loss) * len(group)
        group_correct, group_pairs = pair_accuracy(scores, batch["ranks"], batch["valid"])
        correct, pairs = correct + int(group_correct), pairs + int(group_pairs)
    model.train()
    return {
        "val/loss": loss_sum / len(rankings),
        "val/pair_accuracy": correct / max(pairs, 1),
        "val/pairs": pairs,
        "val/rankings": len(rankings),
    }


@torch.inference_mode()
def mean_demonstration_score(
    model: RewardModel, demonstrations: list, batch_size: int, pad_token_id: int, amp: Amp
) -> float:
    """Mean score (without the offset) of the demonstrations."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for group in chunks(demonstrations, batch_size):
        batch = to_device(collate_sft(group, pad_token_id), device)
        with amp():
            total += float(model(batch["input_ids"], batch["attention_mask"]).sum())
    return total / len(demonstrations)


# A launcher finds a stage's config class beside its run(): training.engine.reward.Config.
Config = RewardConfig


def run(cfg: RewardConfig, data: dict[str, Any], *, on_progress: ProgressFn | None = None) -> dict:
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    with distributed.process_group(resolve_device(cfg.device), cfg.collective_timeout_s) as (
        world,
        device,
    ):
        return _train(cfg, data, world, device, on_progress)


def _train(
    cfg: RewardConfig,
    data: dict[str, Any],
    world: distributed.World,
    device: torch.device,
    on_progress: ProgressFn | None,
) -> dict:
    seed_everything(cfg.seed)
    precision = resolve_precision(device, cfg.dtype, master_weights=cfg.master_weights)
    amp = precision.amp
    tokenizer = load_tokenizer(cfg.model_path)
    role = trained_role(cfg, precision)
    model = RewardModel.from_causal_lm(cfg.model_path, tokenizer, device, role.dtype)
    take_role(model.trunk, role)  # LoRA on the trunk only: the head trains fully
    if world.sharded:
        distributed.shard(model)

    rankings = encode_rankings(tokenizer, data["rankings"], cfg.max_length)
    train, val = split_rankings(
        rankings, val_fraction=cfg.val_fraction, min_val_pairs=cfg.val_min_pairs,
        max_val_fraction=cfg.val_max_fraction, seed=cfg.seed,
    )  # fmt: skip
    if not train:
        raise ValueError("reward training needs at least one training ranking")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch(len(train), cfg.batch_size)
    # fused: one kernel for the whole update instead of a dozen small ops per parameter tensor
    # (sharded DTensor parameters take the foreach path).
    optimizer = torch.optim.AdamW(
        trainable_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay,
        fused=not world.sharded,
    )  # fmt: skip

    start, history = checkpoint.resume_history(
        cfg.output_dir, models={"reward_model": model}, optimizers={"optimizer": optimizer}
    )

    model.train()
    for step in range(start + 1, total_steps + 1):
        rankings_now = batch_for_step(train, step - 1, cfg.batch_size, cfg.seed)
        lr = cfg.lr * warmup_factor(step, cfg.warmup_steps)
        set_lr(optimizer, lr)

        optimizer.zero_grad(set_to_none=True)
        if world.sharded:
            loss_value, correct, pairs = backward_sharded(
                model, rankings_now, tokenizer.pad_token_id, amp, world, device
            )
            grad_norm = distributed.clip_grad(list(model.parameters()), cfg.grad_clip)
        else:
            batch = to_device(collate_rankings(rankings_now, tokenizer.pad_token_id), device)
            loss, scores = score_rankings(model, batch, amp)
            loss.backward()
            loss_value = loss.item()
            grad_norm = clip_grad(model.parameters(), cfg.grad_clip)
            correct_t, pairs_t = pair_accuracy(scores.detach(), batch["ranks"], batch["valid"])
            correct, pairs = int(correct_t), int(pairs_t)
        optimizer.step()

        metrics = {
            "train/loss": loss_value,
            "train/pair_accuracy": int(correct) / max(int(pairs), 1),
            "train/grad_norm": grad_norm,
            "lr": lr,
        }
        if val and (step % cfg.eval_every == 0 or step == total_steps):
            metrics |= evaluate(model, val, cfg.batch_size, tokenizer.pad_token_id, amp)
        history.append({"step": step, **metrics})
        checkpoint.save_if_due(
            cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
            models={"reward_model": model}, optimizers={"optimizer": optimizer}, history=history,
            world=world,
        )  # fmt: skip
        if on_progress is not None and world.main:
            on_progress(step, total_steps, metrics)

    demonstrations = data.get("demonstrations") or []
    if cfg.normalize_on_demonstrations and demonstrations:
        # InstructGPT: "normalized using a bias so that the labeler demonstrations achieve a mean
        # score of 0 before doing RL".
        encoded = encode_demonstrations(tokenizer, demonstrations, cfg.max_length)
        model.score_offset = -mean_demonstration_score(
            model, encoded, cfg.batch_size, tokenizer.pad_token_id, amp
        )

    end_training(model.trunk)  # LoRA merged: the trunk is a plain HF model again
    model_dir = Path(cfg.output_dir) / "model"
    if world.sharded:  # gathered on rank 0 into a plain copy of the model, saved as one process
        weights = distributed.full_state_dict(model)
        if world.main:
            offset = model.score_offset
            cpu = torch.device("cpu")
            model = RewardModel.from_causal_lm(cfg.model_path, tokenizer, cpu, role.dtype)
            model.load_state_dict(weights)
            model.score_offset = offset
    if world.main:
        checkpoint.write_dir_atomically(
            model_dir, lambda tmp: model.save_pretrained(tmp, tokenizer)
        )
    result = {
        "output_dir": str(cfg.output_dir),
        "model_dir": str(model_dir),
        "total_steps": total_steps,
        "metrics": {
            "train/loss": last_value(history, "train/loss"),
            "val/loss": last_value(history, "val/loss"),
            "val/pair_accuracy": last_value(history, "val/pair_accuracy"),
            "val/pairs": last_value(history, "val/pairs"),
            "score_offset": model.score_offset,
            "train_rankings": len(train),
            "val_rankings": len(val),
        },
        "history": history,
    }
    if world.main:
        checkpoint.write_result(cfg.output_dir, result)
    return result
