"""SFT on the toy model on CPU."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.training.engine.helpers import (
    CPU,
    Watch,
    assert_plain_model_dir,
    causal_lm_parameters,
    safetensors_of,
    unchanged,
)
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


def test_sft_with_lora_trains_only_the_adapters_and_saves_a_plain_merged_model(
    toy_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, sft)
    cfg = SFTConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3,
                    batch_size=4, lr=1e-2, lora_rank=4)  # fmt: skip
    result = sft.run(cfg, {"demonstrations": demonstrations(20)})

    trainable = watch.trainable["model"]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert watch.changed("model") == trainable  # every adapter changed, no base weight did
    assert_plain_model_dir(result["model_dir"], toy_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(result["model_dir"])
    assert type(merged).__name__ == "GPT2LMHeadModel"


def test_pure_bf16_sft_on_the_cpu_trains_bf16_weights_and_saves_them_in_bf16(
    toy_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, sft)
    # lr 1e-2: bf16 keeps 8 bits, so an update under 2^-9 of a weight (1e-3 of a LayerNorm's 1.0)
    # rounds away: the trade pure bf16 makes.
    cfg = SFTConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3,
                    batch_size=4, lr=1e-2, master_weights="bfloat16", dtype="bfloat16")  # fmt: skip
    result = sft.run(cfg, {"demonstrations": demonstrations(20)})

    assert set(watch.dtypes("model").values()) == {torch.bfloat16}
    assert watch.changed("model") == watch.trainable["model"]  # every parameter changed
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in result["history"])
    assert {t.dtype for t in safetensors_of(result["model_dir"]).values()} == {torch.bfloat16}
