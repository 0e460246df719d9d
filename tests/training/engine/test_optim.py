"""Learning-rate warmup and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch

from training.engine.optim import clip_grad, warmup_factor


def gradients(scale: float) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    parameters = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((3, 4), (5,), (2, 2, 2))]
    for p in parameters:
        p.grad = scale * torch.randn(p.shape, generator=generator)
    return parameters


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_is_torchs_clip_grad_norm(scale):
    ours, theirs = gradients(scale), gradients(scale)
    theirs[1].grad = None  # a parameter without a gradient is skipped
    ours[1].grad = None
    norm = clip_grad(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_([p for p in theirs if p.grad is not None], 1.0)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(ours, theirs, strict=True):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_clip_grad_off_only_measures_and_a_nan_norm_reaches_the_gradients():
    parameters = gradients(10.0)
    before = [p.grad.clone() for p in parameters]
    norm = clip_grad(parameters, 0.0)
    assert norm == pytest.approx(torch.cat([g.flatten() for g in before]).norm().item(), rel=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(parameters, before, strict=True))
    parameters[0].grad[0, 0] = float("nan")
    assert math.isnan(clip_grad(parameters, 1.0))
    assert torch.isnan(parameters[2].grad).all()


def test_warmup_is_linear_from_the_first_step_then_flat():
    assert [warmup_factor(step, 4) for step in (1, 2, 4, 5, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert warmup_factor(1, 0) == 1.0
