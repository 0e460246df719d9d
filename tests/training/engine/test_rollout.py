"""Rollouts: decoding responses, and the log-probs and values PPO learns from."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import CPU, padded_response_logprobs
from tests.training.engine.toy_model import questions
from training.engine import ppo, rollout
from training.engine.data import encode_prompts
from training.engine.lm import freeze, load_causal_lm, load_tokenizer, position_ids_from_mask
from training.engine.losses import ppo_policy_loss
from training.engine.precision import autocast
from training.engine.reward_model import RewardModel
from training.engine.sampler import BuiltinSampler

pytestmark = pytest.mark.slow  # trains a model on CPU

AMP = partial(autocast, CPU, torch.float32)


def zero_score(query_responses, attention_mask, responses):
    return torch.zeros(query_responses.shape[0])


def test_a_function_scorer_sees_the_prompts_and_the_decoded_responses(sft_model_dir):
    tokenizer = load_tokenizer(sft_model_dir)
    seen = []

    def reward_fn(prompts, responses):
        seen.append((prompts, responses))
        return [float(len(r)) for r in responses]

    responses = torch.tensor([tokenizer("tea.")["input_ids"] + [tokenizer.eos_token_id]])
    score = rollout.function_scorer(reward_fn, tokenizer, ["What now?"])
    assert score(responses, responses, responses).tolist() == [4.0]
    assert seen == [(["What now?"], ["tea."])]


def test_the_first_rollout_has_zero_kl_and_its_log_probs_give_unit_ratio(
    sft_model_dir, reward_model_dir
):
    """Policy and reference start equal: no KL; recomputing the log-probs over every padded
    column gives the rollout's, so the first PPO ratio is 1 and nothing is clipped."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU).eval()
    reference = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    value_model = RewardModel.from_pretrained(reward_model_dir, tokenizer, CPU).eval()
    reward_model = freeze(RewardModel.from_pretrained(reward_model_dir, tokenizer, CPU))
    batch, _ = rollout.make_rollout(
        policy,
        reference,
        value_model,
        rollout.reward_model_scorer(reward_model),
        encode_prompts(tokenizer, questions(6), 64),
        sampler=BuiltinSampler(policy, tokenizer, AMP),
        max_new_tokens=8,
        temperature=1.0,
        seed=0,
        amp=AMP,
    )
    rewards, kl = ppo.token_rewards(batch, kl_coef=0.02, missing_eos_penalty=1.0)
    assert kl.abs().max().item() == 0

    logprobs, _ = padded_response_logprobs(
        policy,
        batch.query_responses.clone(),
        batch.attention_mask.clone(),
        batch.responses.clone(),
        batch.prompt_length,
        1.0,
    )
    response_mask = batch.response_mask.float()
    _, stats = ppo_policy_loss(
        logprobs, batch.logprobs.clone(), torch.ones_like(response_mask), response_mask, 0.2
    )
    assert stats["ratio"].item() == pytest.approx(1.0, abs=1e-6)
    assert stats["clipfrac"].item() == 0
    assert logprobs.requires_grad


def test_rollout_log_probs_match_the_sampling_distribution_at_temperature(sft_model_dir):
    """Re-scoring the sampled tokens with a full forward gives the log-probs the sampler used."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    prompt_ids = encode_prompts(tokenizer, questions(4), 64)
    batch, _ = rollout.make_rollout(
        policy,
        policy,
        RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU),
        zero_score,
        prompt_ids,
        sampler=BuiltinSampler(policy, tokenizer, AMP),
        max_new_tokens=6,
        temperature=0.7,
        seed=0,
        amp=AMP,
    )
    # Recompute the first response token's log-prob from a plain HF forward of the prompt.
    prompts = batch.query_responses[:, : batch.prompt_length]
    prompt_mask = batch.attention_mask[:, : batch.prompt_length]
    with torch.no_grad():
        logits = policy(
            input_ids=prompts,
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
        ).logits[:, -1]
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, batch.responses[:, :1]).squeeze(-1)
    torch.testing.assert_close(batch.logprobs[:, 0], expected, rtol=1e-5, atol=1e-5)
