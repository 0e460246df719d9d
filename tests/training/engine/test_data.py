"""Records to tensors: EOS on every response, prompt masked from the SFT loss, padding sides."""

from __future__ import annotations

import torch

from training.engine.data import (
    EncodedRanking,
    collate_prompts,
    collate_rankings,
    collate_sft,
    encode_demonstrations,
    encode_prompts,
    encode_rankings,
    fold_scores,
    split_rankings,
    split_train_val,
    untied_pairs,
)
from training.engine.lm import load_tokenizer
from training.engine.losses import IGNORE_INDEX


def test_a_demonstration_ends_with_eos_and_only_its_response_is_labelled(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    record = {"prompt": "What does the cat do?", "completion": "the cat sees the moon."}
    [example] = encode_demonstrations(tokenizer, [record], max_length=128)
    prompt_ids = encode_prompts(tokenizer, [record["prompt"]], 128)[0]
    response_ids = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
    assert example.input_ids == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert example.prompt_length == len(prompt_ids)

    batch = collate_sft([example], tokenizer.pad_token_id)
    labels = batch["labels"][0].tolist()
    assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert labels[len(prompt_ids) :] == response_ids + [tokenizer.eos_token_id]


def test_conversational_completions_are_accepted(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    plain = {"prompt": "Hi", "completion": "the moon."}
    chat = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "the moon."}],
    }
    assert encode_demonstrations(tokenizer, [plain], 64) == encode_demonstrations(
        tokenizer, [chat], 64
    )


def test_long_examples_cut_the_prompt_from_the_left_first(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    record = {"prompt": "the cat sees the moon. " * 20, "completion": "tea."}
    [example] = encode_demonstrations(tokenizer, [record], max_length=16)
    assert len(example.input_ids) == 16
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[: example.prompt_length]).endswith("Assistant: ")


def test_training_batches_pad_right_and_prompts_pad_left(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    records = [
        {"prompt": "Hi", "completion": "tea."},
        {"prompt": "Hi", "completion": "a long one."},
    ]
    batch = collate_sft(encode_demonstrations(tokenizer, records, 64), tokenizer.pad_token_id)
    assert batch["attention_mask"][0].tolist()[-1] == 0
    assert batch["attention_mask"][0].tolist()[0] == 1
    assert batch["labels"][0].tolist()[-1] == IGNORE_INDEX

    prompts = collate_prompts([[7, 8, 9], [5]], tokenizer.pad_token_id)
    assert prompts["input_ids"].tolist() == [[7, 8, 9], [tokenizer.pad_token_id] * 2 + [5]]
    assert prompts["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_all_completions_of_all_rankings_go_in_one_batch_after_their_shared_prompt(
    toy_model_dir,
):
    tokenizer = load_tokenizer(toy_model_dir)
    records = [
        {"prompt": "Hi", "completions": ["tea.", "the moon."], "ranks": [2, 1]},
        {"prompt": "Yo there", "completions": ["a", "b", "c"], "ranks": [1, 1, 2]},
    ]
    rankings = encode_rankings(tokenizer, records, 64)
    batch = collate_rankings(rankings, tokenizer.pad_token_id)
    assert batch["prompt_ids"].shape[0] == 2
    assert batch["completion_ids"].shape[0] == 5
    assert batch["ranking_index"].tolist() == [0, 0, 1, 1, 1]
    assert batch["ranks"].tolist() == [[2, 1, 0], [1, 1, 2]]
    assert batch["valid"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["prompt_mask"][0, 0] == 0  # the shorter prompt is left-padded
    for row, mask in zip(batch["completion_ids"], batch["completion_mask"], strict=True):
        assert row[mask.sum() - 1] == tokenizer.eos_token_id
    folded = fold_scores(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), batch["valid"])
    assert folded.tolist() == [[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]]


def test_a_ranking_cuts_its_prompt_once_so_the_longest_completion_fits(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    record = {
        "prompt": "the cat sees the moon. " * 10,
        "completions": ["tea.", "the king carries an old book."],
        "ranks": [1, 2],
    }
    [ranking] = encode_rankings(tokenizer, [record], max_length=24)
    longest = max(len(c) for c in ranking.completions)
    assert len(ranking.prompt) + longest == 24
    assert all(c[-1] == tokenizer.eos_token_id for c in ranking.completions)


def _rankings(pairs_each: list[int]) -> list[EncodedRanking]:
    """Rankings of 2..4 completions with the given untied pairs each (ranks, not tokens, count)."""
    ranks_for = {1: [1, 2], 3: [1, 2, 3], 5: [1, 1, 2, 3], 6: [1, 2, 3, 4], 0: [1, 1]}
    return [EncodedRanking([1], [[2]] * len(ranks_for[n]), ranks_for[n]) for n in pairs_each]


def test_untied_pairs_leave_ties_out():
    assert [untied_pairs(r) for r in ([1, 2], [1, 1], [1, 1, 2, 3], [1, 2, 3, 4])] == [1, 0, 5, 6]


def test_the_held_out_rankings_grow_until_their_pairs_tell_60_from_50_percent():
    rankings = _rankings([6] * 100)  # K = 4, no ties: 6 pairs each
    # The fraction alone: 10 rankings, 60 pairs. The minimum of 194 pairs needs 33 (198 pairs),
    # within the cap of 25; so 25 are held out, 75 still train.
    train, val = split_rankings(rankings, val_fraction=0.1, min_val_pairs=194,
                                max_val_fraction=0.25, seed=0)  # fmt: skip
    assert (len(train), len(val)) == (75, 25)
    train, val = split_rankings(rankings, val_fraction=0.1, min_val_pairs=194,
                                max_val_fraction=0.5, seed=0)  # fmt: skip
    assert (len(train), len(val)) == (67, 33)
    assert sum(untied_pairs(r.ranks) for r in val) == 198


def test_with_no_minimum_the_rankings_split_as_every_other_stage_splits():
    rankings = _rankings([1, 3, 5, 6, 0] * 8)
    plain = split_train_val(rankings, 0.1, seed=3)
    assert split_rankings(rankings, val_fraction=0.1, min_val_pairs=0, max_val_fraction=0.25,
                          seed=3) == plain  # fmt: skip
    # A minimum holds out the same rankings first, then the next in the same order.
    train, val = split_rankings(rankings, val_fraction=0.1, min_val_pairs=10**6,
                                max_val_fraction=0.25, seed=3)  # fmt: skip
    assert val[: len(plain[1])] == plain[1] and len(val) == 10 and len(train) == 30


def test_the_fraction_wins_when_it_holds_out_more_than_the_cap():
    rankings = _rankings([6] * 100)
    train, val = split_rankings(rankings, val_fraction=0.4, min_val_pairs=194,
                                max_val_fraction=0.25, seed=0)  # fmt: skip
    assert len(val) == 40 and len(train) == 60
    assert split_rankings(rankings[:1], val_fraction=0.1, min_val_pairs=194,
                          max_val_fraction=0.25, seed=0) == (rankings[:1], [])  # fmt: skip
