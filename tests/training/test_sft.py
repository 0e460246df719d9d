"""SFT on a tiny model on CPU."""

from __future__ import annotations

import pytest
import torch

from tests.training.helpers import CPU, causal_lm_parameters, unchanged
from tests.training.tiny import demonstrations
from training import sft
from training.config import SFTConfig
from training.data import collate_sft, encode_demonstrations
from training.losses import IGNORE_INDEX, sft_loss
from training.modeling import bias_free_head, load_causal_lm, load_tokenizer, logits_where

pytestmark = pytest.mark.slow  # trains a model on CPU


def test_sft_changes_every_trainable_parameter(tiny_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(tiny_model_dir), output_dir=str(tmp_path), max_steps=3, batch_size=4, lr=1e-3
    )
    result = sft.run(cfg, {"demonstrations": demonstrations(20)})
    before = causal_lm_parameters(tiny_model_dir, tiny_model_dir)
    after = causal_lm_parameters(result["model_dir"], result["model_dir"])
    assert unchanged(before, after) == []


def test_sft_lowers_validation_loss_and_logs_it(tiny_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(tiny_model_dir),
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


def test_sft_loss_counts_response_tokens_only(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, tokenizer, CPU).eval()
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


def test_the_fused_response_loss_has_the_plain_loss_and_gradients(tiny_model_dir):
    """The output projection fused with the loss gives the loss and gradients of the logits
    path (which any model whose head is not a plain projection takes)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = encode_demonstrations(tokenizer, demonstrations(4), 64)
    batch = collate_sft(examples, tokenizer.pad_token_id)
    targets = batch["labels"][:, 1:]
    select = torch.zeros_like(batch["labels"], dtype=torch.bool)
    select[:, :-1] = targets != IGNORE_INDEX
    results = []
    for fused in (True, False):
        model = load_causal_lm(tiny_model_dir, tokenizer, CPU).eval()
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


def test_an_exception_from_on_progress_stops_the_run(tiny_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(tiny_model_dir), output_dir=str(tmp_path), max_steps=10, batch_size=4
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


def test_running_a_finished_run_again_returns_its_result(tiny_model_dir, tmp_path):
    cfg = SFTConfig(
        model_path=str(tiny_model_dir), output_dir=str(tmp_path), max_steps=2, batch_size=4
    )
    first = sft.run(cfg, {"demonstrations": demonstrations(8)})
    calls = []
    again = sft.run(
        cfg, {"demonstrations": demonstrations(8)}, on_progress=lambda *a: calls.append(a)
    )
    assert again == first
    assert calls == []
