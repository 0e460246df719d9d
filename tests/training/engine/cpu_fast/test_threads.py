"""Two pieces of work side by side (cpu_fast/threads.py): how SideBySide runs them, and PPO's
policy and value passes side by side against the plain path, in order on one thread each
(losses within rel 1e-5, gradients within rtol 1e-4 or 1e-6 of the largest entry)."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import torch

from tests.training.engine.helpers import CPU, assert_close_gradients, gradients, update_batch
from training.engine import ppo
from training.engine.config import PPOConfig
from training.engine.cpu_fast.threads import SideBySide
from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.precision import autocast
from training.engine.reward_model import RewardModel


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


@pytest.mark.slow
def test_ppo_policy_and_value_side_by_side_give_the_plain_losses_and_gradients(
    sft_model_dir, fast_paths, two_threads
):
    """`backward_part` with the policy's and the value model's passes on two threads, one
    intra-op thread each, against the plain path: the passes in order."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    batch = update_batch(tokenizer)
    cfg = PPOConfig(policy_path="p", output_dir="o", temperature=0.7)
    amp = partial(autocast, CPU, torch.float32)
    results = []
    for on in (True, False):
        fast_paths(on)
        policy.zero_grad(set_to_none=True)
        value_model.zero_grad(set_to_none=True)
        with SideBySide(CPU).running() as side:
            assert (side._pool is not None) == on  # really on two threads, or really in order
            stats = ppo.backward_part(
                policy, value_model, batch, torch.arange(8), 1.0, cfg, amp, side=side
            )
        results.append((stats, gradients(policy, value_model)))
    (side_stats, side_grads), (plain_stats, plain_grads) = results
    assert side_stats == pytest.approx(plain_stats, rel=1e-5, abs=1e-7)
    assert_close_gradients(side_grads, plain_grads)
