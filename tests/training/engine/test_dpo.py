"""DPO on labeler rankings: the loss against hand-computed values, then the loop on the toy model."""

from __future__ import annotations

import math

import pytest
import torch

from tests.training.engine.helpers import (
    CPU,
    Watch,
    assert_plain_model_dir,
    causal_lm_parameters,
    unchanged,
)
from tests.training.engine.toy_model import banana_rankings
from training.engine import dpo
from training.engine.config import DPOConfig
from training.engine.data import Example, collate_sft
from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.losses import dpo_loss, preference_pairs


def test_preference_pairs_are_every_untied_pair_better_first():
    assert preference_pairs([2, 1, 3]) == [(1, 0), (0, 2), (1, 2)]
    assert preference_pairs([1, 1, 2]) == [(0, 2), (1, 2)]  # the tie (0, 1) is dropped
    assert preference_pairs([1, 1]) == []


def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_log_ratio_gap():
    chosen, rejected = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([-1.0, 0.0, 2.0])
    losses, margins = dpo_loss(chosen, rejected, beta=0.5)
    # beta * (c - r) = 1, 0, -2; -log sigmoid(m) = log(1 + exp(-m)).
    expected = [math.log(1 + math.exp(-1.0)), math.log(2.0), math.log(1 + math.exp(2.0))]
    torch.testing.assert_close(losses, torch.tensor(expected))
    torch.testing.assert_close(margins, torch.tensor([1.0, 0.0, -2.0]))
    smoothed, _ = dpo_loss(chosen[:1], rejected[:1], beta=0.5, label_smoothing=0.1)
    # 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.9 * 0.31326 + 0.1 * 1.31326
    assert smoothed.item() == pytest.approx(0.9 * 0.3132617 + 0.1 * 1.3132617, abs=1e-6)


def test_sequence_logprobs_sum_the_response_tokens_log_probs(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    rows = [Example([5, 6, 7, 8, 9], 2), Example([5, 6, 11, 12], 3)]  # prompt lengths 2 and 3
    batch = collate_sft(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        found = dpo.sequence_logprobs(model, batch)
        expected = []
        for row in rows:
            logits = model(torch.tensor([row.input_ids])).logits[0].log_softmax(-1)
            expected.append(
                sum(
                    logits[t - 1, row.input_ids[t]]
                    for t in range(row.prompt_length, len(row.input_ids))
                )
            )
    torch.testing.assert_close(found, torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_a_ranking_weighs_the_same_whatever_its_number_of_pairs():
    class R:  # an encoded ranking's shape is all the loss reads
        def __init__(self, ranks):
            self.ranks, self.completions = ranks, [[0]] * len(ranks)

    # Ranking 1 has 3 pairs, all with log-ratio gap 1; ranking 2 has 1 pair with gap -1.
    logratios = torch.tensor([1.0, 0.0, -1.0, 0.0, 1.0])  # ranks: [1, 2, 3], [2, 1]
    cfg = DPOConfig(model_path="m", output_dir="o", beta=1.0)
    loss, margins = dpo.ranking_pair_loss(logratios, [R([1, 2, 3]), R([2, 1])], cfg)
    per_pair, _ = dpo_loss(
        torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, -1.0, 0.0]), 1.0
    )
    first = per_pair[:3].mean()  # gaps 1, 2, 1
    assert loss.item() == pytest.approx(((first + per_pair[3]) / 2).item())
    torch.testing.assert_close(margins, torch.tensor([1.0, 2.0, 1.0, 1.0]))


@pytest.mark.slow
def test_dpo_changes_every_parameter_and_learns_an_easy_preference(toy_model_dir, tmp_path):
    cfg = DPOConfig(
        model_path=str(toy_model_dir),
        output_dir=str(tmp_path),
        epochs=3,
        batch_size=8,
        lr=3e-3,
        beta=0.5,
        val_fraction=0.25,
        eval_every=1000,
        checkpoint_every=0,
    )
    result = dpo.run(cfg, {"rankings": banana_rankings(96)})
    history = result["history"]
    assert result["metrics"]["val_rankings"] == 24
    # Held-out rankings: the implicit reward orders most untied pairs right (chance: 0.5).
    assert result["metrics"]["val/pair_accuracy"] > 0.8, history[-1]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    before = causal_lm_parameters(toy_model_dir, toy_model_dir)
    after = causal_lm_parameters(result["model_dir"], toy_model_dir)
    assert unchanged(before, after) == []


@pytest.mark.slow
def test_a_finished_dpo_run_is_not_run_again_and_a_resumed_one_ends_where_a_whole_one_does(
    toy_model_dir, tmp_path
):
    data = {"rankings": banana_rankings(24)}
    common = {"model_path": str(toy_model_dir), "max_steps": 4, "batch_size": 4, "lr": 1e-3}
    whole = dpo.run(DPOConfig(output_dir=str(tmp_path / "whole"), **common), data)
    again = dpo.run(DPOConfig(output_dir=str(tmp_path / "whole"), **common), data)
    assert again == whole
    # Stopped after its checkpoint at step 2, then run again from the same folder.
    halted = DPOConfig(output_dir=str(tmp_path / "halted"), checkpoint_every=2, **common)

    def stop_at_three(step, total, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dpo.run(halted, data, on_progress=stop_at_three)
    resumed = dpo.run(halted, data)
    assert [h["train/loss"] for h in resumed["history"]] == [
        h["train/loss"] for h in whole["history"]
    ]
    assert unchanged(
        causal_lm_parameters(whole["model_dir"], toy_model_dir),
        causal_lm_parameters(resumed["model_dir"], toy_model_dir),
    ) == list(causal_lm_parameters(whole["model_dir"], toy_model_dir))


@pytest.mark.slow
def test_dpo_with_lora_trains_only_the_adapters_and_saves_a_plain_merged_model(
    toy_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, dpo)
    cfg = DPOConfig(model_path=str(toy_model_dir), output_dir=str(tmp_path), max_steps=3,
                    batch_size=4, lr=1e-2, lora_rank=4)  # fmt: skip
    result = dpo.run(cfg, {"rankings": banana_rankings(16)})
    trainable = watch.trainable["model"]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert watch.changed("model") == trainable
    # The reference is the policy with its adapters off: the first step's policy is the base.
    assert result["history"][0]["train/margin"] == pytest.approx(0.0, abs=1e-6)
    assert_plain_model_dir(result["model_dir"], toy_model_dir)
