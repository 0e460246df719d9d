"""SFT on the toy model on CPU."""

from __future__ import annotations

import pytest
import torch

from tests.training.engine.helpers import CPU, causal_lm_parameters, unchanged
from tests.training.engine.toy_model import demonstrations
from training.engine import sft
from training.engine.config import SFTConfig
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.losses import IGNORE_INDEX

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
