"""Direct preference optimisation on labeler rankings (Rafailov et al. 2023): the policy learns
from the rankings themselves, with no reward model and no sampling during training.

Every strictly ordered pair of a ranking (all C(K,2), ties dropped) is a (chosen, rejected) pair.
As for InstructGPT's reward model, a ranking is one batch element: its K completions go through
the policy once and give all its pairs, and each ranking weighs the same whatever its number of
pairs. The frozen reference is the starting policy; its log-probs are computed once, before the
first step (they never change), so a step costs one policy forward and backward.
data: {"rankings": [{"prompt", "completions", "ranks"}, ...]}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from training.engine import checkpoint
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


@torch.inference_mode()
def reference_logprobs(
    model: PreTrainedModel, rankings: list[EncodedRanking], cfg: DPOConfig, pad: int, amp: Amp
) -> list[torch.Tensor]:
    """The frozen reference's log-prob of each ranking's completions, computed once. # per ranking (K,)"""
    out: list[torch.Tensor] = []
    for group in chunks(rankings, cfg.batch_size):
        flat = completion_logprobs(model, list(group), pad, amp).float()
        out += list(flat.split([len(r.completions) for r in group]))
    return out


@torch.inference_mode()
def evaluate(
    policy: PreTrainedModel, val: list[int], rankings: list[EncodedRanking],
    ref: list[torch.Tensor], cfg: DPOConfig, pad: int, amp: Amp,
) -> dict[str, float]:  # fmt: skip
    """Held-out loss (mean over rankings) and implicit-reward accuracy (over all untied pairs)."""
    policy.eval()
    loss_sum, correct, pairs = 0.0, 0, 0
    for group in chunks(val, cfg.batch_size):
        batch = [rankings[i] for i in group]
        logratios = completion_logprobs(policy, batch, pad, amp).float() - torch.cat(
            [ref[i] for i in group]
        )
        loss, margins = ranking_pair_loss(logratios, batch, cfg)
        loss_sum += float(loss) * len(batch)
        correct, pairs = correct + int((margins > 0).sum()), pairs + len(margins)
    policy.train()
    return {"val/loss": loss_sum / len(val), "val/pair_accuracy": correct / max(pairs, 1)}


# A launcher finds a stage's config class beside its run(): training.engine.dpo.Config.
Config = DPOConfig


def run(cfg: DPOConfig, data: dict[str, Any], *, on_progress: ProgressFn | None = None) -> dict:
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(
        device, cfg.dtype, master_weights=cfg.master_weights, frozen_dtype=cfg.frozen_dtype
    )
    amp = precision.amp
    tokenizer = load_tokenizer(cfg.model_path)
    role = trained_role(cfg, precision)
    policy = load_causal_lm(cfg.model_path, tokenizer, device, role)
    disable_dropout(policy)  # the log-ratios must compare deterministic functions
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
        ref = reference_logprobs(reference, rankings, cfg, pad, amp)
    del reference
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch(len(train), cfg.batch_size)
    optimizer = torch.optim.AdamW(
        trainable_parameters(policy), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    start, history = checkpoint.resume_history(
        cfg.output_dir, models={"model": policy}, optimizers={"optimizer": optimizer}
    )

    policy.train()
    for step in range(start + 1, total_steps + 1):
        group = batch_for_step(train, step - 1, cfg.batch_size, cfg.seed)
        batch = [rankings[i] for i in group]
        lr = cfg.lr * warmup_factor(step, cfg.warmup_steps)
        set_lr(optimizer, lr)

        logprobs = completion_logprobs(policy, batch, pad, amp).float()  # (sum K,)
        loss, margins = ranking_pair_loss(logprobs - torch.cat([ref[i] for i in group]), batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        margins = margins.detach()
        grad_norm = clip_grad(policy.parameters(), cfg.grad_clip)
        optimizer.step()

        metrics = {
            "train/loss": loss.item(),
            "train/pair_accuracy": float((margins > 0).float().mean()),
            "train/margin": float(margins.mean()),
            "train/grad_norm": grad_norm,
            "lr": lr,
        }
        if val and (step % cfg.eval_every == 0 or step == total_steps):
            metrics |= evaluate(policy, val, rankings, ref, cfg, pad, amp)
        history.append({"step": step, **metrics})
        checkpoint.save_if_due(
            cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
            models={"model": policy}, optimizers={"optimizer": optimizer}, history=history,
        )  # fmt: skip
        if on_progress is not None:
            on_progress(step, total_steps, metrics)

    end_training(policy)  # LoRA merged: the model version is a plain HF directory
    model_dir = Path(cfg.output_dir) / "model"
    checkpoint.write_dir_atomically(model_dir, lambda tmp: save_causal_lm(policy, tokenizer, tmp))
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
    checkpoint.write_result(cfg.output_dir, result)
    return result
