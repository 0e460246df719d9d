"""The reward model: where it reads a score, sharing a prompt among completions, saving and
loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.engine.toy_model import build_toy_model
from training.engine.data import collate_rankings, encode_rankings, pad_right
from training.engine.lm import load_tokenizer
from training.engine.reward_model import RewardModel, last_real_index

CPU = torch.device("cpu")


def test_reward_index_is_the_last_real_token_under_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_real_index(mask).tolist() == [2, 4, 0]


def test_reward_index_is_the_last_real_token_under_left_padding_too():
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])  # prompt left-padded, response right
    assert last_real_index(mask).tolist() == [4, 3]


def test_reward_model_scores_a_sequence_the_same_with_or_without_right_padding(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    short = tokenizer("the cat sees the moon.")["input_ids"]
    long = tokenizer("a dog eats some bread and the king carries tea.")["input_ids"]
    pad = tokenizer.pad_token_id
    batch = torch.tensor([short + [pad] * (len(long) - len(short)), long])
    mask = torch.tensor([[1] * len(short) + [0] * (len(long) - len(short)), [1] * len(long)])
    with torch.no_grad():
        together = model(batch, mask)
        alone = model(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
        # Changing a pad token's id must not change the score either.
        batch[0, -1] = 5
        repadded = model(batch, mask)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together, repadded)


def test_reward_model_round_trips_through_safetensors(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    model.save_pretrained(tmp_path / "rm", tokenizer)
    files = {p.name for p in (tmp_path / "rm").iterdir()}
    assert {"model.safetensors", "score_head.safetensors", "reward_model.json"} <= files
    assert not any(Path(name).suffix in {".bin", ".pt"} for name in files)

    loaded = RewardModel.from_pretrained(tmp_path / "rm", tokenizer, CPU).eval()
    ids = torch.tensor([tokenizer("the moon.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model(ids, mask))


def test_shared_prompt_scoring_equals_scoring_each_full_sequence(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {
            "prompt": "Hi",
            "completions": ["the moon.", "a", "the king hides tea."],
            "ranks": [3, 2, 1],
        },
    ]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)
    full = [r.prompt + c for r in encode_rankings(tokenizer, records, 64) for c in r.completions]
    full_ids = pad_right(full, tokenizer.pad_token_id)
    full_mask = pad_right([[1] * len(ids) for ids in full], 0)
    with torch.no_grad():
        shared = model.score_completions(
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["completion_ids"],
            batch["completion_mask"],
            batch["ranking_index"],
        )
        separate = model(full_ids, full_mask)
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-5)


def test_shared_prompt_scoring_has_the_gradients_of_scoring_each_full_sequence(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {"prompt": "Hi", "completions": ["the moon.", "a", "the king hides."], "ranks": [3, 2, 1]},
    ]
    encoded = encode_rankings(tokenizer, records, 64)
    batch = collate_rankings(encoded, tokenizer.pad_token_id)
    full = [r.prompt + c for r in encoded for c in r.completions]
    full_ids = pad_right(full, tokenizer.pad_token_id)
    full_mask = pad_right([[1] * len(ids) for ids in full], 0)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    gradients = []
    for shared in (True, False):
        model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        torch.manual_seed(0)
        torch.nn.init.normal_(model.head.weight)  # the same head in both
        if shared:
            scores = model.score_completions(
                batch["prompt_ids"],
                batch["prompt_mask"],
                batch["completion_ids"],
                batch["completion_mask"],
                batch["ranking_index"],
            )
        else:
            scores = model(full_ids, full_mask)
        (scores @ weights).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
    shared_grads, separate_grads = gradients
    assert shared_grads.keys() == separate_grads.keys()
    for name in shared_grads:
        scale = separate_grads[name].abs().max().item()
        torch.testing.assert_close(
            shared_grads[name], separate_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name
        )


def test_gradients_reach_the_trunk_through_the_shared_prompt(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU)
    records = [{"prompt": "Hi", "completions": ["tea.", "a dog eats."], "ranks": [1, 2]}]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)
    scores = model.score_completions(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["completion_ids"],
        batch["completion_mask"],
        batch["ranking_index"],
    )
    (scores[0] - scores[1]).backward()
    # Position 0 is used by the prompt only: its embedding gets gradient only through the cache.
    assert model.trunk.wpe.weight.grad[0].abs().sum() > 0


def test_a_reward_model_from_another_tokenizer_is_refused(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).save_pretrained(
        tmp_path / "rm", tokenizer
    )
    other_dir = build_toy_model(tmp_path / "other", with_pad=False)
    with pytest.raises(ValueError, match="different tokenizer"):
        RewardModel.from_pretrained(tmp_path / "rm", load_tokenizer(other_dir), CPU)
