"""Shared loop pieces."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from training.engine.cpu_fast.threads import SideBySide
from training.engine.optim import clip_grad


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


def test_side_by_side_runs_the_second_piece_on_another_thread_with_one_intra_op_thread_each(
    two_threads,
):
    seen = {}

    def record(name):
        def work():
            seen[name] = (threading.get_ident(), torch.get_num_threads())
            return name

        return work

    with SideBySide(torch.device("cpu")).running() as side:
        assert torch.get_num_threads() == 1
        assert side(record("a"), record("b")) == ("a", "b")
        with side.alone():
            assert torch.get_num_threads() == 2  # sampling gets the whole CPU back
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # restored
    assert seen["a"][0] == threading.get_ident() != seen["b"][0]
    assert seen["a"][1] == seen["b"][1] == 1


@pytest.mark.parametrize(("device", "threads"), [("cpu", 1), ("meta", 2)])
def test_side_by_side_runs_in_order_on_one_thread_or_off_the_cpu(two_threads, device, threads):
    torch.set_num_threads(threads)
    order = []
    with SideBySide(torch.device(device)).running() as side:
        assert torch.get_num_threads() == threads
        side(lambda: order.append(threading.get_ident()), lambda: order.append("second"))
    assert order == [threading.get_ident(), "second"]


def test_side_by_side_reraises_either_sides_error_and_still_waits_for_the_other(two_threads):
    finished = threading.Event()

    def slow_ok():
        finished.wait(0.05)
        finished.set()

    def fails():
        raise ValueError("boom")

    with SideBySide(torch.device("cpu")).running() as side:
        with pytest.raises(ValueError, match="boom"):
            side(fails, slow_ok)
        assert finished.is_set()  # the helper thread's work was waited for, not abandoned
        with pytest.raises(ValueError, match="boom"):
            side(lambda: None, fails)
    assert torch.get_num_threads() == 2
