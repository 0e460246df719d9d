"""Reward model on rankings, on the toy model on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from tests.training.engine.helpers import (
    CPU,
    Watch,
    reward_model_parameters,
    safetensors_of,
    unchanged,
)
from tests.training.engine.toy_model import banana_rankings, demonstrations
from training.engine import reward
from training.engine.config import RewardConfig
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.lm import load_tokenizer
from training.engine.reward_model import RewardModel

pytestmark = pytest.mark.slow  # trains a model on CPU


def test_reward_training_changes_every_trainable_parameter(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    cfg = RewardConfig(
        model_path=str(toy_model_dir),
        output_dir=str(tmp_path),
        max_steps=3,
        batch_size=4,
        lr=1e-3,
        normalize_on_demonstrations=False,
    )
    result = reward.run(cfg, {"rankings": banana_rankings(16)})
    trained = RewardModel.from_pretrained(result["model_dir"], tokenizer, CPU)
    torch.manual_seed(0)  # the fresh head is random: compare against the one the run started from
    initial = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU)
    assert unchanged(reward_model_parameters(initial), reward_model_parameters(trained)) == []


def test_reward_model_learns_an_easy_preference_to_over_90_percent_held_out(
    sft_model_dir, tmp_path
):
    cfg = RewardConfig(
        model_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        epochs=3,
        batch_size=8,
        lr=1e-3,
        val_fraction=0.25,
        eval_every=1000,
    )
    data = {"rankings": banana_rankings(160), "demonstrations": demonstrations(32, seed=9)}
    result = reward.run(cfg, data)
    assert result["metrics"]["val_rankings"] == 40  # 25% of 160: the cap of val_min_pairs too
    # The accuracy comes with its n: the untied pairs of the 40 held-out rankings (K = 2..4).
    assert 40 <= result["metrics"]["val/pairs"] <= 40 * 6
    assert result["history"][-1]["val/rankings"] == 40
    assert result["metrics"]["val/pair_accuracy"] > 0.9
    assert result["history"][-1]["val/loss"] < result["history"][0]["train/loss"]


def test_reward_offset_makes_demonstrations_score_zero_on_average(sft_model_dir, tmp_path):
    cfg = RewardConfig(
        model_path=str(sft_model_dir), output_dir=str(tmp_path), max_steps=4, batch_size=4, lr=1e-3
    )
    demos = demonstrations(24, seed=3)
    result = reward.run(cfg, {"rankings": banana_rankings(16), "demonstrations": demos})
    offset = result["metrics"]["score_offset"]
    assert offset != 0

    tokenizer = load_tokenizer(result["model_dir"])
    model = RewardModel.from_pretrained(result["model_dir"], tokenizer, CPU).eval()
    assert model.score_offset == offset
    batch = collate_sft(encode_demonstrations(tokenizer, demos, 512), tokenizer.pad_token_id)
    with torch.no_grad():
        rewards = model.rewards(batch["input_ids"], batch["attention_mask"])
    assert rewards.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert rewards.std().item() > 0


def test_a_reward_run_writes_a_model_that_hugging_face_loads_and_that_scores_as_ours(
    sft_model_dir, tmp_path
):
    cfg = RewardConfig(
        model_path=str(sft_model_dir), output_dir=str(tmp_path), max_steps=2, batch_size=4, lr=1e-3
    )
    demos = demonstrations(8, seed=3)
    result = reward.run(cfg, {"rankings": banana_rankings(8), "demonstrations": demos})

    classifier = AutoModelForSequenceClassification.from_pretrained(result["model_dir"])
    assert classifier.num_labels == 1
    assert classifier.config.score_offset == result["metrics"]["score_offset"]
    tokenizer = load_tokenizer(result["model_dir"])
    ours = RewardModel.from_pretrained(result["model_dir"], tokenizer, CPU).eval()
    batch = collate_sft(encode_demonstrations(tokenizer, demos, 512), tokenizer.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        torch.testing.assert_close(logits, ours(ids, mask), rtol=1e-5, atol=1e-6)


def test_reward_training_with_lora_trains_the_trunk_adapters_and_the_whole_head(
    toy_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, reward)
    cfg = RewardConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3,
                       batch_size=4, lr=1e-2, lora_rank=4)  # fmt: skip
    result = reward.run(cfg, {"rankings": banana_rankings(16), "demonstrations": demonstrations(4)})

    trainable = watch.trainable["reward_model"]
    adapters = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    assert adapters and trainable == adapters | {"head.weight"}
    assert watch.changed("reward_model") == trainable
    # A plain trunk (no adapter files or names), merged: it differs from the base model's.
    model_dir = Path(result["model_dir"])
    assert not list(model_dir.glob("adapter_*"))
    trunk = AutoModel.from_pretrained(model_dir).state_dict()
    base = AutoModel.from_pretrained(toy_model_dir).state_dict()
    assert trunk.keys() == base.keys()
    assert any(not torch.equal(trunk[name], base[name]) for name in base)
    tokenizer = load_tokenizer(toy_model_dir)
    loaded = RewardModel.from_pretrained(model_dir, tokenizer, CPU)
    torch.testing.assert_close(loaded.head.weight, watch.end["reward_model"]["head.weight"])


def test_pure_bf16_reward_training_keeps_the_scalar_head_in_fp32(
    toy_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, reward)
    cfg = RewardConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3,
                       batch_size=4, lr=1e-2, master_weights="bfloat16", dtype="bfloat16")  # fmt: skip
    result = reward.run(cfg, {"rankings": banana_rankings(16), "demonstrations": demonstrations(4)})

    dtypes = watch.dtypes("reward_model")
    assert {n: d for n, d in dtypes.items() if n.startswith("head.")} == {
        "head.weight": torch.float32,
    }
    assert {d for n, d in dtypes.items() if n.startswith("trunk.")} == {torch.bfloat16}
    assert watch.changed("reward_model") == watch.trainable["reward_model"]
    saved = safetensors_of(result["model_dir"])
    assert saved["transformer.wte.weight"].dtype == torch.bfloat16
