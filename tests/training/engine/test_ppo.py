"""PPO on the toy model on CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import (
    CPU,
    causal_lm_parameters,
    reward_model_parameters,
    unchanged,
)
from tests.training.engine.toy_model import banana_rankings, demonstrations, questions
from training.engine import ppo, reward
from training.engine.config import PPOConfig, RewardConfig
from training.engine.cpu_fast.threads import SideBySide
from training.engine.data import collate_prompts, encode_prompts
from training.engine.lm import freeze, load_causal_lm, load_tokenizer, logits_at
from training.engine.losses import logprobs_from_logits, ppo_policy_loss, ppo_value_loss
from training.engine.precision import autocast
from training.engine.reward_model import RewardModel

pytestmark = pytest.mark.slow  # trains a model on CPU


def padded_response_logprobs(
    model, query_responses, attention_mask, responses, prompt_length, temperature
):
    """The plain computation the packed path replaced: logits at every response column (padding
    included), then log-probs at the sampling temperature.  # (batch, T), (batch, T, vocab)"""
    end = query_responses.shape[1] - 1
    logits = logits_at(model, query_responses, attention_mask, prompt_length - 1, end)
    logits = logits.float() / temperature
    return logprobs_from_logits(logits, responses), logits


def mentions_banana(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("banana" in response) for response in responses]


@pytest.fixture(scope="module")
def reward_model_dir(sft_model_dir, tmp_path_factory):
    cfg = RewardConfig(
        model_path=str(sft_model_dir),
        output_dir=str(tmp_path_factory.mktemp("rm-run")),
        max_steps=10,
        batch_size=8,
        lr=1e-3,
    )
    data = {"rankings": banana_rankings(80), "demonstrations": demonstrations(16)}
    return reward.run(cfg, data)["model_dir"]


def test_ppo_changes_every_trainable_parameter_of_policy_and_value_model(
    sft_model_dir, reward_model_dir, tmp_path
):
    cfg = PPOConfig(
        policy_path=str(sft_model_dir),
        reward_model_path=str(reward_model_dir),
        output_dir=str(tmp_path),
        total_episodes=16,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        max_new_tokens=8,
        lr=1e-3,
        value_lr=1e-3,
        ptx_coef=0.5,
        ptx_batch_size=4,
    )
    data = {"prompts": questions(16), "demonstrations": demonstrations(16)}
    result = ppo.run(cfg, data)

    before = causal_lm_parameters(sft_model_dir, sft_model_dir)
    after = causal_lm_parameters(result["model_dir"], result["model_dir"])
    assert unchanged(before, after) == []
    tokenizer = load_tokenizer(sft_model_dir)
    value_before = RewardModel.from_pretrained(reward_model_dir, tokenizer, CPU)
    value_after = RewardModel.from_pretrained(result["value_model_dir"], tokenizer, CPU)
    assert (
        unchanged(reward_model_parameters(value_before), reward_model_parameters(value_after)) == []
    )
    assert "loss/ptx" in result["history"][-1]


def test_ppo_raises_reward_on_a_programmatic_reward_while_kl_stays_bounded(sft_model_dir, tmp_path):
    cfg = PPOConfig(
        policy_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        total_episodes=16 * 10,
        batch_size=16,
        mini_batch_size=8,
        max_new_tokens=16,
        lr=5e-4,
        value_lr=5e-4,
    )
    result = ppo.run(cfg, {"prompts": questions(64, seed=5)}, reward_fn=mentions_banana)
    history = result["history"]
    scores = [entry["reward/score"] for entry in history]
    start, end = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert end > start + 0.4, scores
    kls = sorted(entry["kl/k1"] for entry in history)  # nats per response
    assert kls[len(kls) // 2] < 10
    assert kls[-1] < 50
    for name in (
        "kl/k3",
        "policy/entropy",
        "policy/clipfrac",
        "policy/approx_kl",
        "loss/value",
        "value/explained_variance",
        "response/length",
        "response/eos_rate",
        "time/generation",
    ):
        assert name in history[-1]


def test_first_ppo_step_has_zero_kl_and_unit_ratio(sft_model_dir, reward_model_dir):
    cfg = PPOConfig(policy_path=str(sft_model_dir), output_dir="unused", max_new_tokens=8)
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU).eval()
    reference = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    value_model = RewardModel.from_pretrained(reward_model_dir, tokenizer, CPU).eval()
    reward_model = freeze(RewardModel.from_pretrained(reward_model_dir, tokenizer, CPU))
    prompts = collate_prompts(encode_prompts(tokenizer, questions(6), 64), tokenizer.pad_token_id)
    rollout, _ = ppo.make_rollout(
        policy,
        reference,
        value_model,
        lambda ids, mask, responses: reward_model(ids, mask),
        prompts,
        cfg,
        tokenizer,
        torch.Generator().manual_seed(0),
        partial(autocast, CPU, torch.float32),
    )
    rewards, kl = ppo.token_rewards(rollout, cfg.kl_coef, cfg.missing_eos_penalty)
    assert kl.abs().max().item() == 0

    logprobs, _ = padded_response_logprobs(
        policy,
        rollout.query_responses.clone(),
        rollout.attention_mask.clone(),
        rollout.responses.clone(),
        rollout.prompt_length,
        cfg.temperature,
    )
    mask = rollout.response_mask.float()
    _, stats = ppo_policy_loss(logprobs, rollout.logprobs.clone(), torch.ones_like(mask), mask, 0.2)
    assert stats["ratio"].item() == pytest.approx(1.0, abs=1e-6)
    assert stats["clipfrac"].item() == 0
    assert logprobs.requires_grad


def test_rollout_log_probs_match_the_sampling_distribution_at_temperature(sft_model_dir):
    """Re-scoring the sampled tokens with a full forward gives the log-probs the sampler used."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    cfg = PPOConfig(policy_path="p", output_dir="o", max_new_tokens=6, temperature=0.7)
    prompts = collate_prompts(encode_prompts(tokenizer, questions(4), 64), tokenizer.pad_token_id)
    rollout, _ = ppo.make_rollout(
        policy,
        policy,
        RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU),
        lambda ids, mask, responses: torch.zeros(ids.shape[0]),
        prompts,
        cfg,
        tokenizer,
        torch.Generator().manual_seed(0),
        partial(autocast, CPU, torch.float32),
    )
    # Recompute the first response token's log-prob from a plain HF forward of the prompt.
    with torch.no_grad():
        positions = (prompts["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = policy(
            input_ids=prompts["input_ids"],
            attention_mask=prompts["attention_mask"],
            position_ids=positions,
        ).logits[:, -1]
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, rollout.responses[:, :1]).squeeze(-1)
    torch.testing.assert_close(rollout.logprobs[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_the_first_step_through_the_rollouts_forwards_is_the_recomputed_one(sft_model_dir):
    """keep_graph: backpropagating through the rollout's own policy and value forwards gives the
    losses and gradients of recomputing them (at the same weights, in the minibatch's order)."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    reference = freeze(load_causal_lm(sft_model_dir, tokenizer, CPU))
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    cfg = PPOConfig(policy_path="p", output_dir="o", max_new_tokens=10, temperature=0.7)
    amp = partial(autocast, CPU, torch.float32)
    prompts = collate_prompts(encode_prompts(tokenizer, questions(6), 64), tokenizer.pad_token_id)
    rollout, _ = ppo.make_rollout(
        policy,
        reference,
        value_model,
        lambda ids, mask, responses: torch.zeros(ids.shape[0]),
        prompts,
        cfg,
        tokenizer,
        torch.Generator().manual_seed(0),
        amp,
        keep_graph=True,
    )
    assert rollout.first_pass is not None and rollout.first_pass.logprobs.requires_grad
    assert not rollout.logprobs.requires_grad and not rollout.values.requires_grad
    mask = rollout.response_mask.float()
    assert 0 < mask.mean() < 1  # responses of different lengths
    generator = torch.Generator().manual_seed(1)
    batch = ppo.UpdateBatch(
        query_responses=rollout.query_responses,
        attention_mask=rollout.attention_mask,
        responses=rollout.responses,
        response_mask=mask,
        old_logprobs=rollout.logprobs + 0.1 * torch.randn(mask.shape, generator=generator),
        old_values=rollout.values,
        advantages=torch.randn(mask.shape, generator=generator),
        returns=torch.randn(mask.shape, generator=generator),
        prompt_length=rollout.prompt_length,
    )
    minibatch = torch.randperm(6, generator=generator)
    models = [*policy.parameters(), *value_model.parameters()]
    runs = []
    for first_pass in (rollout.first_pass, None):
        for p in models:
            p.grad = None
        stats = ppo.backward_part(policy, value_model, batch, minibatch, 1.0, cfg, amp, first_pass)
        runs.append((stats, [p.grad for p in models]))
    (reused, reused_grads), (recomputed, recomputed_grads) = runs
    assert reused == pytest.approx(recomputed, rel=1e-5, abs=1e-7)
    for a, b in zip(reused_grads, recomputed_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item())


def test_the_score_lands_on_the_last_response_token_and_missing_eos_is_penalised():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    zeros = torch.zeros(2, 4)
    rollout = ppo.Rollout(
        query_responses=torch.zeros(2, 6, dtype=torch.long),
        attention_mask=torch.ones(2, 6, dtype=torch.long),
        responses=torch.zeros(2, 4, dtype=torch.long),
        response_mask=mask,
        finished=torch.tensor([True, False]),
        prompt_length=2,
        logprobs=torch.full((2, 4), -1.0),
        ref_logprobs=torch.full((2, 4), -1.5),
        values=zeros,
        scores=torch.tensor([2.0, 2.0]),
        entropy=zeros,
    )
    rewards, kl = ppo.token_rewards(rollout, kl_coef=0.1, missing_eos_penalty=1.0)
    assert kl.tolist() == [[0.5, 0.5, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5]]
    assert rewards[0].tolist() == pytest.approx([-0.05, -0.05, -0.05 + 2.0, 0.0])
    assert rewards[1].tolist() == pytest.approx([-0.05, -0.05, -0.05, -0.05 + 2.0 - 1.0])


def test_ppo_needs_exactly_one_source_of_reward(sft_model_dir, tmp_path):
    cfg = PPOConfig(policy_path=str(sft_model_dir), output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        ppo.run(cfg, {"prompts": questions(4)})


def test_a_reward_function_sees_the_users_prompt_and_the_decoded_response(sft_model_dir, tmp_path):
    seen = []

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(zip(prompts, responses, strict=True))
        return [0.0] * len(responses)

    cfg = PPOConfig(
        policy_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        total_episodes=4,
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=12,
    )
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What now?"}]
    ppo.run(cfg, {"prompts": ["What does the cat do?", {"prompt": chat}] * 2}, reward_fn=judge)
    assert sorted({prompt for prompt, _ in seen}) == ["What does the cat do?", "What now?"]
    assert all(
        "<|endoftext|>" not in response and "<|pad|>" not in response for _, response in seen
    )


def update_batch(tokenizer, episodes: int = 8):
    """An UpdateBatch of left-padded prompts and responses of varied lengths."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 7, 3, 9, 2, 9, 5, 4])[:episodes]
    mask = (torch.arange(9) < lengths.unsqueeze(1)).float()  # (8, 9), responses of varied length
    prompts = collate_prompts(
        encode_prompts(tokenizer, questions(episodes), 64), tokenizer.pad_token_id
    )
    responses = torch.randint(2, 300, (episodes, 9), generator=generator)
    return ppo.UpdateBatch(
        query_responses=torch.cat([prompts["input_ids"], responses], 1),
        attention_mask=torch.cat([prompts["attention_mask"], mask.long()], 1),
        responses=responses,
        response_mask=mask,
        old_logprobs=torch.randn(episodes, 9, generator=generator) - 5,
        old_values=torch.randn(episodes, 9, generator=generator),
        advantages=torch.randn(episodes, 9, generator=generator),
        returns=torch.randn(episodes, 9, generator=generator),
        prompt_length=prompts["input_ids"].shape[1],
    )


def test_a_part_computed_on_real_tokens_gives_the_padded_losses_and_gradients(sft_model_dir):
    """`backward_part` (GPT-2: real tokens only) against the padded computation it replaced:
    `padded_response_logprobs` and `values` over every column, then the same losses."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    batch = update_batch(tokenizer)
    assert batch.attention_mask[:, : batch.prompt_length].min() == 0  # prompts are left-padded
    cfg = PPOConfig(policy_path="p", output_dir="o", temperature=0.7)
    models = [*policy.parameters(), *value_model.parameters()]

    fast_stats = ppo.backward_part(
        policy, value_model, batch, torch.arange(8), 1.0, cfg, partial(autocast, CPU, torch.float32)
    )
    fast_grads = [p.grad.clone() for p in models]
    policy.zero_grad()
    value_model.zero_grad()
    end = batch.query_responses.shape[1] - 1
    logprobs, _ = padded_response_logprobs(
        policy,
        batch.query_responses,
        batch.attention_mask,
        batch.responses,
        batch.prompt_length,
        cfg.temperature,
    )
    values = value_model.values(
        batch.query_responses, batch.attention_mask, batch.prompt_length - 1, end
    )
    mask = batch.response_mask
    policy_loss, policy_stats = ppo_policy_loss(
        logprobs, batch.old_logprobs, batch.advantages, mask, cfg.cliprange
    )
    value_loss, _ = ppo_value_loss(
        values, batch.old_values, batch.returns, mask, cfg.cliprange_value
    )
    (policy_loss + cfg.vf_coef * value_loss).backward()
    assert fast_stats["loss/policy"] == pytest.approx(policy_loss.item(), rel=1e-5, abs=1e-6)
    assert fast_stats["loss/value"] == pytest.approx(value_loss.item(), rel=1e-5)
    assert fast_stats["policy/ratio"] == pytest.approx(policy_stats["ratio"].item(), rel=1e-5)
    for fast, padded in zip(fast_grads, (p.grad for p in models), strict=True):
        scale = padded.abs().max().item()
        torch.testing.assert_close(fast, padded, rtol=1e-4, atol=1e-6 * scale)


def test_length_sorted_parts_give_the_gradient_of_the_whole_minibatch(sft_model_dir):
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    batch = update_batch(tokenizer)
    mask = batch.response_mask
    cfg = PPOConfig(policy_path="p", output_dir="o")
    amp = partial(autocast, CPU, torch.float32)
    minibatch = torch.arange(8)

    def gradients(parts):
        policy.zero_grad()
        value_model.zero_grad()
        stats = [ppo.backward_part(policy, value_model, batch, p, s, cfg, amp) for p, s in parts]
        grads = [p.grad.clone() for p in [*policy.parameters(), *value_model.parameters()]]
        return grads, {name: sum(s[name] for s in stats) for name in stats[0]}

    assert len(ppo.length_parts(minibatch, mask.sum(1), split=False)) == 1
    parts = ppo.length_parts(minibatch, mask.sum(1))
    assert len(parts) == 2
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    split_grads, split_stats = gradients(parts)
    whole_grads, whole_stats = gradients([(minibatch, 1.0)])
    for split, whole in zip(split_grads, whole_grads, strict=True):
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-6)
    assert split_stats == pytest.approx(whole_stats, rel=1e-5)


def test_policy_and_value_side_by_side_give_the_gradients_of_the_passes_in_order(sft_model_dir):
    """`backward_part` with the policy's and the value model's passes on two threads (SideBySide,
    one intra-op thread each) against the same passes in order on one thread: same losses, same
    gradients (each network's pass is the same single-threaded computation either way)."""
    tokenizer = load_tokenizer(sft_model_dir)
    policy = load_causal_lm(sft_model_dir, tokenizer, CPU)
    value_model = RewardModel.from_causal_lm(sft_model_dir, tokenizer, CPU)
    batch = update_batch(tokenizer)
    cfg = PPOConfig(policy_path="p", output_dir="o", temperature=0.7)
    amp = partial(autocast, CPU, torch.float32)
    params = [*policy.parameters(), *value_model.parameters()]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        in_order = ppo.backward_part(policy, value_model, batch, torch.arange(8), 1.0, cfg, amp)
        grads = [p.grad.clone() for p in params]
        policy.zero_grad()
        value_model.zero_grad()
        torch.set_num_threads(2)
        with SideBySide(CPU).running() as side:
            assert side._pool is not None  # really on two threads
            side_stats = ppo.backward_part(
                policy, value_model, batch, torch.arange(8), 1.0, cfg, amp, side=side
            )
    finally:
        torch.set_num_threads(before)
    assert side_stats == pytest.approx(in_order, abs=1e-6)
    for param, grad in zip(params, grads, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-7)
