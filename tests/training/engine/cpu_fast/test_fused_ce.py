"""SFT's output projection fused with its cross-entropy (cpu_fast/fused_ce.py): by hand, and
against the plain projection and loss (values within rtol 1e-5 / 1e-6, gradients within rtol 1e-4
or 1e-6 of the largest entry)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.training.engine.helpers import CPU, assert_close_gradients, gradients
from tests.training.engine.toy_model import demonstrations
from training.engine import sft
from training.engine.cpu_fast import fused_ce
from training.engine.cpu_fast.fused_ce import linear_cross_entropy
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.losses import sft_loss


def test_linear_cross_entropy_by_hand():
    # logits = hidden @ weight.T = [[1, 0, 0], [0, 2, 0]]; labels 0 and 2.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.tensor([0, 2]))
    first = math.log(math.e + 2) - 1  # -log softmax([1, 0, 0])[0]
    second = math.log(math.exp(2) + 2)  # -log softmax([0, 2, 0])[2]
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    loss.backward()
    # d loss / d logits = (softmax - one_hot) / 2; d loss / d hidden = that @ weight.
    p = math.e / (math.e + 2)
    q = math.exp(2) / (math.exp(2) + 2)
    expected = torch.tensor([[(p - 1) / 2, (1 - p) / 2 / 2], [(1 - q) / 2 / 2, q / 2]])
    torch.testing.assert_close(hidden.grad, expected)


def test_linear_cross_entropy_equals_the_plain_projection_and_loss_with_gradients():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(50, (37,), generator=generator)
    results = []
    for fused in (True, False):
        hidden = torch.randn(37, 16, generator=torch.Generator().manual_seed(5)).requires_grad_()
        weight = torch.randn(50, 16, generator=torch.Generator().manual_seed(6)).requires_grad_()
        if fused:
            loss = linear_cross_entropy(hidden, weight, labels)
        else:
            loss = sft_loss(hidden @ weight.T, labels)
        loss.backward()
        results.append((loss.detach(), hidden.grad, weight.grad))
    for fused, plain in zip(*results, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-7)


def test_the_fused_response_loss_has_the_plain_loss_and_gradients(toy_model_dir, fast_paths):
    """`sft.response_loss` fused (the switch on) against the logits path (off), which any model
    whose head is not a plain fp32 projection takes."""
    tokenizer = load_tokenizer(toy_model_dir)
    batch = collate_sft(encode_demonstrations(tokenizer, demonstrations(4), 64), 0)
    results = []
    for on in (True, False):
        fast_paths(on)
        model = load_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        assert (fused_ce.head_weight(model, CPU) is not None) == on
        loss = sft.response_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), gradients(model)))
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert_close_gradients(fused_grads, plain_grads)


def test_the_fused_loss_is_left_to_the_plain_path_under_autocast(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = load_causal_lm(toy_model_dir, tokenizer, CPU)
    assert fused_ce.head_weight(model, CPU) is model.lm_head.weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused_ce.head_weight(model, CPU) is None
