"""SFT on the toy model on CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import CPU, causal_lm_parameters, unchanged
from tests.training.engine.toy_model import demonstrations
from training.engine import sft
from training.engine.config import SFTConfig
from training.engine.cpu_fast.threads import SideBySide
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.lm import (
    bias_free_head,
    disable_dropout,
    draws_random_numbers,
    load_causal_lm,
    load_tokenizer,
    logits_where,
)
from training.engine.losses import IGNORE_INDEX, sft_loss
from training.engine.precision import autocast

pytestmark = pytest.mark.slow  # trains a model on CPU


def test_sft_changes_every_trainable_parameter(toy_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3, batch_size=4, lr=1e-3
    )
    result = sft.run(cfg, {"demonstrations": demonstrations(20)})
    before = causal_lm_parameters(toy_model_dir, toy_model_dir)
    after = causal_lm_parameters(result["model_dir"], result["model_dir"])
    assert unchanged(before, after) == []


def test_sft_lowers_validation_loss_and_logs_it(toy_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(toy_model_dir),
        output_dir=str(tmp_path),
        max_steps=30,
        batch_size=8,
        lr=3e-3,
        eval_every=10,
        val_fraction=0.2,
    )
    progress = []
    result = sft.run(
        cfg, {"demonstrations": demonstrations(60)}, on_progress=lambda *a: progress.append(a)
    )
    val_losses = [entry["val/loss"] for entry in result["history"] if "val/loss" in entry]
    assert len(val_losses) == 3
    assert val_losses[-1] < val_losses[0] - 1.0
    assert [step for step, _, _ in progress] == list(range(1, 31))
    assert all(total == 30 for _, total, _ in progress)
    assert result["metrics"]["val/loss"] == val_losses[-1]
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_sft_loss_counts_response_tokens_only(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    examples = encode_demonstrations(tokenizer, demonstrations(3), 64)
    batch = collate_sft(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        fast = sft.response_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    assert fast.item() == pytest.approx(expected.item(), rel=1e-5)
    # Changing prompt tokens' labels cannot matter: they are masked.
    assert keep.sum() == sum(len(e.input_ids) - e.prompt_length for e in examples)


def test_the_fused_response_loss_has_the_plain_loss_and_gradients(toy_model_dir):
    """The output projection fused with the loss gives the loss and gradients of the logits
    path (which any model whose head is not a plain projection takes)."""
    tokenizer = load_tokenizer(toy_model_dir)
    examples = encode_demonstrations(tokenizer, demonstrations(4), 64)
    batch = collate_sft(examples, tokenizer.pad_token_id)
    targets = batch["labels"][:, 1:]
    select = torch.zeros_like(batch["labels"], dtype=torch.bool)
    select[:, :-1] = targets != IGNORE_INDEX
    results = []
    for fused in (True, False):
        model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        assert bias_free_head(model) is not None
        if fused:
            loss = sft.response_loss(model, batch)
        else:
            logits = logits_where(model, batch["input_ids"], batch["attention_mask"], select)
            loss = sft_loss(logits, targets[targets != IGNORE_INDEX])
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert fused_grads.keys() == plain_grads.keys()
    for name in fused_grads:
        scale = plain_grads[name].abs().max().item()
        torch.testing.assert_close(
            fused_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6 * scale, msg=name
        )


def test_an_exception_from_on_progress_stops_the_run(toy_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=10, batch_size=4
    )

    class Cancelled(Exception):
        pass

    def cancel_at_3(step, total, metrics):
        if step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        sft.run(cfg, {"demonstrations": demonstrations(20)}, on_progress=cancel_at_3)
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "result.json").exists()


def test_running_a_finished_run_again_returns_its_result(toy_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=2, batch_size=4
    )
    first = sft.run(cfg, {"demonstrations": demonstrations(8)})
    calls = []
    again = sft.run(
        cfg, {"demonstrations": demonstrations(8)}, on_progress=lambda *a: calls.append(a)
    )
    assert again == first
    assert calls == []


def test_half_batches_split_the_rows_and_their_shares_of_response_tokens(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    examples = encode_demonstrations(tokenizer, demonstrations(5), 64)
    batch = collate_sft(examples, tokenizer.pad_token_id)
    parts = sft.half_batches(batch)
    assert len(parts) == 2
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    rows = []
    for half, share in parts:
        lengths = half["attention_mask"].sum(1)
        assert half["input_ids"].shape[1] == lengths.max()  # cut to its own longest row
        tokens = (half["labels"][:, 1:] != IGNORE_INDEX).sum()
        assert share == pytest.approx(tokens / (batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        rows += [tuple(r[r != tokenizer.pad_token_id].tolist()) for r in half["input_ids"]]
    everything = [tuple(r[r != tokenizer.pad_token_id].tolist()) for r in batch["input_ids"]]
    assert sorted(rows) == sorted(everything)  # every row once
    # One row, or a half without a response token: the whole batch as one part.
    one = {name: t[:1] for name, t in batch.items()}
    assert sft.half_batches(one) == [(one, 1.0)]
    no_response = dict(batch, labels=batch["labels"].clone())
    order = batch["attention_mask"].sum(1).argsort(descending=True, stable=True)
    no_response["labels"][order[1::2]] = IGNORE_INDEX
    assert len(sft.half_batches(no_response)) == 1


def test_two_halves_side_by_side_give_the_whole_batchs_loss_and_gradients(
    toy_model_dir, two_threads
):
    """`sft.backward` with two halves on two threads (each one intra-op thread) against the whole
    batch in one pass: same loss, same gradients; and the same bits twice (the two halves'
    gradients accumulate in either order, a sum of two)."""
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)
    disable_dropout(model)
    assert not draws_random_numbers(model)
    batch = collate_sft(encode_demonstrations(tokenizer, demonstrations(7), 64), 0)
    amp = partial(autocast, CPU, torch.float32)

    def gradients(side):
        model.zero_grad(set_to_none=True)
        loss = sft.backward(model, batch, amp, side)
        return loss, [p.grad.clone() for p in model.parameters()]

    whole_loss, whole = gradients(None)
    with SideBySide(CPU).running() as side:
        assert side._pool is not None  # really on two threads
        split_loss, split = gradients(side)
        again_loss, again = gradients(side)
    assert split_loss == pytest.approx(whole_loss, rel=1e-6)
    for a, b, c in zip(split, whole, again, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item())
        assert torch.equal(a, c)
    assert again_loss == split_loss


def test_a_forward_that_draws_random_numbers_stays_on_one_thread(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)  # dropout 0.1
    assert draws_random_numbers(model)
    assert not SideBySide(CPU, allowed=False).enabled
    disable_dropout(model)
    assert not draws_random_numbers(model)
    model.model_attention = torch.nn.Module()
    model.model_attention.attention_dropout = 0.1  # as Llama-style attention keeps it
    assert draws_random_numbers(model)
