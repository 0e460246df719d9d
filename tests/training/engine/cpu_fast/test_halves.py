"""SFT's batch in two halves side by side (cpu_fast/halves.py) against the plain path, the whole
batch in one pass: loss within rel 1e-5, gradients within rtol 1e-4 or 1e-6 of the largest entry."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import CPU, assert_close_gradients, gradients
from tests.training.engine.toy_model import demonstrations
from training.engine import sft
from training.engine.cpu_fast.halves import backward_in_halves, half_batches
from training.engine.cpu_fast.threads import SideBySide
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.lm import disable_dropout, draws_random_numbers, load_causal_lm, load_tokenizer
from training.engine.losses import IGNORE_INDEX
from training.engine.precision import autocast


def test_half_batches_split_the_rows_and_their_shares_of_response_tokens(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    examples = encode_demonstrations(tokenizer, demonstrations(5), 64)
    batch = collate_sft(examples, tokenizer.pad_token_id)
    parts = half_batches(batch)
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
    assert half_batches(one) == [(one, 1.0)]
    no_response = dict(batch, labels=batch["labels"].clone())
    order = batch["attention_mask"].sum(1).argsort(descending=True, stable=True)
    no_response["labels"][order[1::2]] = IGNORE_INDEX
    assert len(half_batches(no_response)) == 1


def test_two_halves_side_by_side_give_the_plain_loss_and_gradients(
    toy_model_dir, fast_paths, two_threads
):
    """Two halves on two threads (one intra-op thread each) against the whole batch in one plain
    pass; and the same bits twice (the halves' gradients accumulate in either order, a sum of
    two)."""
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)
    disable_dropout(model)
    assert not draws_random_numbers(model)
    batch = collate_sft(encode_demonstrations(tokenizer, demonstrations(7), 64), 0)
    backward = partial(sft.backward, model, amp=partial(autocast, CPU, torch.float32))

    def in_halves(side):
        model.zero_grad(set_to_none=True)
        return backward_in_halves(batch, backward, side), gradients(model)

    fast_paths(True)
    with SideBySide(CPU).running() as side:
        assert side._pool is not None  # really on two threads
        split_loss, split = in_halves(side)
        again_loss, again = in_halves(side)
    fast_paths(False)
    model.zero_grad(set_to_none=True)
    whole_loss = backward(batch)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert_close_gradients(split, gradients(model))
    assert again_loss == split_loss
    assert all(torch.equal(split[name], again[name]) for name in split)


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
