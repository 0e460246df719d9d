"""PPO's first gradient step through the rollout's own forwards (cpu_fast/first_pass.py) against
the plain path, which recomputes them: losses within rel 1e-5, gradients within rtol 1e-4 or 1e-6
of the largest entry."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import CPU, assert_close_gradients, gradients
from tests.training.engine.toy_model import questions
from training.engine import critic_free, ppo
from training.engine.config import CriticFreeConfig, PPOConfig
from training.engine.cpu_fast import first_pass
from training.engine.data import encode_prompts
from training.engine.lm import freeze, load_causal_lm, load_tokenizer
from training.engine.precision import autocast
from training.engine.reward_model import RewardModel
from training.engine.rollout import make_rollout
from training.engine.sampler import BuiltinSampler

pytestmark = pytest.mark.slow  # trains a model on CPU


def test_the_first_step_through_the_rollouts_forwards_is_the_plain_recomputed_one(
    sft_model_dir, fast_paths
):
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    reference = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    cfg = PPOConfig(
        policy_path="p", output_dir="o", batch_size=6, mini_batch_size=6, temperature=0.7
    )
    amp = partial(autocast, CPU, torch.float32)
    fast_paths(True)
    assert first_pass.applies(CPU, cfg.batch_size, cfg.mini_batch_size)
    assert not first_pass.applies(CPU, cfg.batch_size, 3)  # a minibatch smaller than the batch
    rollout, _ = make_rollout(
        policy,
        reference,
        value_model,
        lambda query_responses, attention_mask, responses: torch.zeros(responses.shape[0]),
        encode_prompts(tokenizer, questions(6), 64),
        sampler=BuiltinSampler(policy, tokenizer, amp),
        max_new_tokens=10,
        temperature=cfg.temperature,
        seed=0,
        amp=amp,
        keep_graph=True,
    )
    assert rollout.first_pass is not None and rollout.first_pass.logprobs.requires_grad
    assert not rollout.logprobs.requires_grad and not rollout.values.requires_grad
    response_mask = rollout.response_mask.float()
    assert 0 < response_mask.mean() < 1  # responses of different lengths
    generator = torch.Generator().manual_seed(1)
    batch = ppo.UpdateBatch(
        query_responses=rollout.query_responses,
        attention_mask=rollout.attention_mask,
        responses=rollout.responses,
        response_mask=response_mask,
        old_logprobs=rollout.logprobs + 0.1 * torch.randn(response_mask.shape, generator=generator),
        old_values=rollout.values,
        advantages=torch.randn(response_mask.shape, generator=generator),
        returns=torch.randn(response_mask.shape, generator=generator),
        prompt_length=rollout.prompt_length,
    )
    minibatch = torch.randperm(6, generator=generator)

    def step(reused: first_pass.FirstPass | None):
        policy.zero_grad(set_to_none=True)
        value_model.zero_grad(set_to_none=True)
        stats = ppo.backward_part(policy, value_model, batch, minibatch, 1.0, cfg, amp, reused)
        return stats, gradients(policy, value_model)

    reused, reused_grads = step(rollout.first_pass)
    fast_paths(False)
    assert not first_pass.applies(CPU, cfg.batch_size, cfg.mini_batch_size)
    recomputed, recomputed_grads = step(None)
    assert reused == pytest.approx(recomputed, rel=1e-5, abs=1e-7)
    assert_close_gradients(reused_grads, recomputed_grads)


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_critic_frees_first_step_through_the_rollouts_forward_is_the_plain_recomputed_one(
    sft_model_dir, fast_paths, estimator
):
    """The same for critic_free.py (policy only, no value model); GRPO's k3 term included."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    reference = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    cfg = CriticFreeConfig(policy_path="p", output_dir="o", estimator=estimator, batch_size=2,
                           group_size=3, mini_batch_size=6, temperature=0.7, kl_coef=0.1)  # fmt: skip
    amp = partial(autocast, CPU, torch.float32)
    fast_paths(True)
    rollout, _ = make_rollout(
        policy, reference, None,
        lambda query_responses, attention_mask, responses: torch.zeros(responses.shape[0]),
        encode_prompts(tokenizer, [q for q in questions(2) for _ in range(3)], 64),
        sampler=BuiltinSampler(policy, tokenizer, amp), max_new_tokens=10,
        temperature=cfg.temperature, seed=0, amp=amp, keep_graph=True,
    )  # fmt: skip
    assert rollout.first_pass is not None and rollout.first_pass.logprobs.requires_grad
    response_mask = rollout.response_mask.float()
    assert 0 < response_mask.mean() < 1  # responses of different lengths
    generator = torch.Generator().manual_seed(1)
    rollout.logprobs = rollout.logprobs + 0.1 * torch.randn(
        response_mask.shape, generator=generator
    )
    advantages = torch.randn(response_mask.shape, generator=generator) * response_mask
    minibatch = torch.randperm(6, generator=generator)

    def step(reused: first_pass.FirstPass | None):
        policy.zero_grad(set_to_none=True)
        stats = critic_free.minibatch_backward(
            policy, rollout, advantages, minibatch, 1.0, cfg, amp, reused
        )
        return stats, gradients(policy)

    reused, reused_grads = step(rollout.first_pass)
    fast_paths(False)
    recomputed, recomputed_grads = step(None)
    assert reused == pytest.approx(recomputed, rel=1e-5, abs=1e-7)
    assert_close_gradients(reused_grads, recomputed_grads)
