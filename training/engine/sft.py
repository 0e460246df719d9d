"""Supervised fine-tuning on labeler demonstrations (InstructGPT step 1).

Loss on response tokens only (the prompt is given, not learned); validation loss on a held-out
split.
Run by several processes (training/engine/distributed.py), the model is sharded with FSDP2, each
process takes its part of every global batch, and the loss, gradients and clip are those of the
whole batch.
data: {"demonstrations": [{"prompt": ..., "completion": ...}, ...]}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel

from training.engine import checkpoint, distributed
from training.engine.config import SFTConfig
from training.engine.cpu_fast import fused_ce, halves
from training.engine.cpu_fast.threads import SideBySide
from training.engine.data import (
    Example,
    batch_for_step,
    chunks,
    collate_sft,
    encode_demonstrations,
    split_train_val,
    steps_per_epoch,
)
from training.engine.lm import (
    draws_random_numbers,
    end_training,
    hidden_where,
    load_causal_lm,
    load_tokenizer,
    logits_where,
    position_ids_from_mask,
    save_causal_lm,
    trainable_parameters,
    trained_role,
)
from training.engine.losses import IGNORE_INDEX, sft_loss
from training.engine.optim import clip_grad, set_lr, warmup_factor
from training.engine.precision import (
    Amp,
    resolve_device,
    resolve_precision,
    seed_everything,
    to_device,
)
from training.engine.progress import ProgressFn, last_value


def response_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy of the response tokens, logits computed only where they count."""
    targets = batch["labels"][:, 1:]  # position i predicts token i + 1
    predicts_response = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_response[:, :-1] = targets != IGNORE_INDEX  # (batch, seq)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = targets[targets != IGNORE_INDEX]  # (n_response_tokens,)
    if isinstance(model, FSDPModule):  # sharded: the root's forward gathers its weights
        positions = position_ids_from_mask(mask)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return sft_loss(logits[predicts_response], labels)
    # cpu_fast: the output projection fused with the loss, when it is a plain fp32 matmul.
    if (weight := fused_ce.head_weight(model, ids.device)) is not None:
        hidden = hidden_where(model, ids, mask, predicts_response)  # (n_response_tokens, embd)
        return fused_ce.linear_cross_entropy(hidden, weight, labels)
    logits = logits_where(model, ids, mask, predicts_response)  # (n_response_tokens, vocab)
    return sft_loss(logits, labels)


def backward(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], amp: Amp, share: float = 1.0
) -> float:
    """Backpropagate share x the batch's response loss; return share x the loss (a part of a
    batch is weighted by its share of the batch's response tokens)."""
    with amp():
        loss = response_loss(model, batch)
    (loss if share == 1.0 else share * loss).backward()
    return share * loss.item()


def backward_sharded(
    model: PreTrainedModel,
    examples: list[Example],
    pad_token_id: int,
    amp: Amp,
    world: distributed.World,
    device: torch.device,
    scale: float = 1.0,
) -> float:
    """This rank's part of a global batch (every world.size-th example): backpropagate scale x
    it, weighted by its share of the batch's response tokens, so that the gradients FSDP averages
    over the ranks are those of scale x the whole batch's token-mean loss; returns that loss."""
    everything = collate_sft(examples, pad_token_id)
    global_tokens = int((everything["labels"][:, 1:] != IGNORE_INDEX).sum())
    batch = to_device(collate_sft(examples[world.rank :: world.size], pad_token_id), device)
    share = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) / global_tokens
    with amp():
        loss = response_loss(model, batch)
    (loss * (scale * share * world.size)).backward()  # FSDP's reduce-scatter divides by size
    return distributed.all_sum(share * loss.item(), device)


@torch.inference_mode()
def validation_loss(
    model: PreTrainedModel, examples: list[Example], batch_size: int, pad_token_id: int, amp: Amp
) -> float:
    """Token-mean response loss over the held-out demonstrations."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for group in chunks(examples, batch_size):
        batch = to_device(collate_sft(group, pad_token_id), device)
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        with amp():
            total += float(response_loss(model, batch)) * tokens
        count += tokens
    model.train()
    return total / max(count, 1)


# A launcher finds a stage's config class beside its run(): training.engine.sft.Config.
Config = SFTConfig


def run(cfg: SFTConfig, data: dict[str, Any], *, on_progress: ProgressFn | None = None) -> dict:
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return result
    with distributed.process_group(resolve_device(cfg.device), cfg.collective_timeout_s) as (
        world,
        device,
    ):
        return _train(cfg, data, world, device, on_progress)


def _train(
    cfg: SFTConfig,
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
    model = load_causal_lm(cfg.model_path, tokenizer, device, role)
    if world.sharded:
        distributed.shard(model)

    examples = encode_demonstrations(tokenizer, data["demonstrations"], cfg.max_length)
    train, val = split_train_val(examples, cfg.val_fraction, cfg.seed)
    if not train:
        raise ValueError("SFT needs at least one training demonstration")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch(len(train), cfg.batch_size)
    # fused: one kernel for the whole update instead of a dozen small ops per parameter tensor
    # (sharded DTensor parameters take the foreach path).
    optimizer = torch.optim.AdamW(
        trainable_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay,
        fused=not world.sharded,
    )  # fmt: skip

    start, history = checkpoint.resume_history(
        cfg.output_dir, models={"model": model}, optimizers={"optimizer": optimizer}
    )

    model.train()
    # On a multi-core CPU each step's two halves of rows run side by side, one core each (at these
    # sizes two OpenMP threads per op gain less); not when the forward draws random numbers.
    side_by_side = not draws_random_numbers(model) and not world.sharded
    with SideBySide(device, allowed=side_by_side).running() as side:
        for step in range(start + 1, total_steps + 1):
            examples_now = batch_for_step(train, step - 1, cfg.batch_size, cfg.seed)
            batch = to_device(collate_sft(examples_now, tokenizer.pad_token_id), device)
            lr = cfg.lr * warmup_factor(step, cfg.warmup_steps)
            set_lr(optimizer, lr)

            optimizer.zero_grad(set_to_none=True)
            if world.sharded:
                loss = backward_sharded(
                    model, examples_now, tokenizer.pad_token_id, amp, world, device
                )
            elif side.enabled:  # cpu_fast: the batch's two halves side by side, one core each
                loss = halves.backward_in_halves(batch, partial(backward, model, amp=amp), side)
            else:
                loss = backward(model, batch, amp)
            if world.sharded:
                grad_norm = distributed.clip_grad(list(model.parameters()), cfg.grad_clip)
            else:
                grad_norm = clip_grad(model.parameters(), cfg.grad_clip)
            optimizer.step()

            metrics = {"train/loss": loss, "train/grad_norm": grad_norm, "lr": lr}
            if val and (step % cfg.eval_every == 0 or step == total_steps):
                with side.alone():
                    metrics["val/loss"] = validation_loss(
                        model, val, cfg.batch_size, tokenizer.pad_token_id, amp
                    )
            history.append({"step": step, **metrics})
            checkpoint.save_if_due(
                cfg.output_dir, step, every=cfg.checkpoint_every, total_steps=total_steps,
                models={"model": model}, optimizers={"optimizer": optimizer}, history=history,
                world=world,
            )  # fmt: skip
            if on_progress is not None and world.main:
                on_progress(step, total_steps, metrics)

    end_training(model)  # LoRA merged: the model version is a plain HF directory
    model_dir = Path(cfg.output_dir) / "model"
    if world.sharded:  # gathered on rank 0 into a plain copy of the model, saved as one process
        weights = distributed.full_state_dict(model)
        if world.main:
            model = load_causal_lm(cfg.model_path, tokenizer, torch.device("cpu"), role)
            model.load_state_dict(weights)
    if world.main:
        checkpoint.write_dir_atomically(
            model_dir, lambda tmp: save_causal_lm(model, tokenizer, tmp)
        )
    result = {
        "output_dir": str(cfg.output_dir),
        "model_dir": str(model_dir),
        "total_steps": total_steps,
        "metrics": {
            "train/loss": last_value(history, "train/loss"),
            "val/loss": last_value(history, "val/loss"),
            "train_examples": len(train),
            "val_examples": len(val),
        },
        "history": history,
    }
    if world.main:
        checkpoint.write_result(cfg.output_dir, result)
    return result
