"""PPO on the toy model on CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.training.engine.helpers import (
    CPU,
    Watch,
    assert_plain_model_dir,
    causal_lm_parameters,
    reward_model_parameters,
    unchanged,
    update_batch,
)
from tests.training.engine.toy_model import demonstrations, questions
from training.engine import ppo
from training.engine.config import PPOConfig
from training.engine.lm import load_causal_lm, load_tokenizer
from training.engine.precision import autocast, resolve_precision
from training.engine.reward_model import RewardModel
from training.engine.rollout import Rollout, held_out_split, make_rollout, response_logprobs
from training.engine.sampler import BuiltinSampler

pytestmark = pytest.mark.slow  # trains a model on CPU


def mentions_banana(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("banana" in response) for response in responses]


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
        eval_prompts=8,
    )
    result = ppo.run(cfg, {"prompts": questions(64, seed=5)}, reward_fn=mentions_banana)
    history = result["history"]
    scores = [entry["reward/score"] for entry in history]
    start, end = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert end > start + 0.4, scores
    # On the 8 prompts it never trained on, the same sampling seed before and after:
    assert history[0]["eval/held_out_prompts"] == 8
    assert history[-1]["eval/score"] > history[0]["eval/score_start"] + 0.2
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


def test_the_score_lands_on_the_last_response_token_and_missing_eos_is_penalised():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    zeros = torch.zeros(2, 4)
    rollout = Rollout(
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


def small_ppo(policy_dir, reward_dir, output_dir, **settings) -> PPOConfig:
    return PPOConfig(policy_path=str(policy_dir), reward_model_path=str(reward_dir),
                     output_dir=str(output_dir), total_episodes=8, batch_size=4,
                     mini_batch_size=2, max_new_tokens=6, lr=1e-2, value_lr=1e-2,
                     **settings)  # fmt: skip


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def test_ppo_with_lora_trains_the_adapters_and_value_head_and_saves_plain_merged_models(
    sft_model_dir, reward_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, ppo)
    cfg = small_ppo(sft_model_dir, reward_model_dir, tmp_path, lora_rank=4)
    result = ppo.run(cfg, {"prompts": questions(8)})

    policy, value = watch.trainable["policy"], watch.trainable["value_model"]
    assert policy and all(is_adapter(n) for n in policy)
    assert {n for n in value if not is_adapter(n)} == {"head.weight"}  # a bias-free head
    assert watch.changed("policy") == policy
    assert watch.changed("value_model") == value
    assert_plain_model_dir(result["model_dir"], sft_model_dir)
    assert not list((tmp_path / "value_model").glob("adapter_*"))


def test_with_lora_the_reference_is_the_policy_with_its_adapters_off(sft_model_dir, tmp_path):
    cfg = PPOConfig(policy_path=str(sft_model_dir), output_dir=str(tmp_path), lora_rank=4)
    tokenizer = load_tokenizer(sft_model_dir)
    models = ppo.load_models(cfg, tokenizer, resolve_precision(CPU))
    assert models.reference is models.policy  # one copy of the base weights
    for name, p in models.policy.named_parameters():
        if "lora_B" in name:  # trained adapters (B starts at 0, where they change nothing)
            torch.nn.init.normal_(p, std=0.5)
    amp = partial(autocast, CPU, torch.float32)
    rollout, _ = make_rollout(
        models.policy, models.reference, models.value_model, lambda *tensors: torch.zeros(4),
        [tokenizer.encode(q) for q in questions(4)],
        sampler=BuiltinSampler(models.policy, tokenizer, amp), max_new_tokens=5,
        temperature=1.0, seed=0, amp=amp,
    )  # fmt: skip
    sft_model = load_causal_lm(sft_model_dir, tokenizer, CPU)
    expected = response_logprobs(
        sft_model, rollout.query_responses, rollout.attention_mask, rollout.responses,
        rollout.response_mask, rollout.prompt_length, 1.0,
    )[0]  # fmt: skip
    torch.testing.assert_close(rollout.ref_logprobs[rollout.response_mask.bool()], expected)
    assert not torch.allclose(rollout.logprobs, rollout.ref_logprobs)


def test_frozen_dtype_bf16_holds_the_reference_and_reward_model_in_bf16_on_the_cpu(
    sft_model_dir, reward_model_dir, tmp_path
):
    cfg = small_ppo(sft_model_dir, reward_model_dir, tmp_path, frozen_dtype="bfloat16")
    tokenizer = load_tokenizer(sft_model_dir)
    precision = resolve_precision(CPU, cfg.dtype, frozen_dtype=cfg.frozen_dtype)
    models = ppo.load_models(cfg, tokenizer, precision)
    assert models.reference.dtype == torch.bfloat16
    assert models.reward_model is not None and models.reward_model.trunk.dtype == torch.bfloat16
    assert models.policy.dtype == torch.float32 and models.value_model.trunk.dtype == torch.float32
    result = ppo.run(cfg, {"prompts": questions(8)})
    assert all(torch.isfinite(torch.tensor(h["kl/k1"])) for h in result["history"])


def test_pure_bf16_ppo_on_the_cpu_trains_bf16_policy_and_value_trunk(
    sft_model_dir, reward_model_dir, tmp_path, monkeypatch
):
    watch = Watch(monkeypatch, ppo)
    cfg = small_ppo(sft_model_dir, reward_model_dir, tmp_path, master_weights="bfloat16",
                    dtype="bfloat16")  # fmt: skip
    result = ppo.run(cfg, {"prompts": questions(8)})
    assert set(watch.dtypes("policy").values()) == {torch.bfloat16}
    value_dtypes = {n: d for n, d in watch.dtypes("value_model").items() if n.startswith("trunk.")}
    assert set(value_dtypes.values()) == {torch.bfloat16}
    assert watch.changed("policy") == watch.trainable["policy"]
    assert watch.changed("value_model") == watch.trainable["value_model"]
    assert all(torch.isfinite(torch.tensor(h["loss/policy"])) for h in result["history"])


def test_held_out_prompts_are_scored_before_and_after_and_never_trained_on(sft_model_dir, tmp_path):
    calls: list[list[str]] = []

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        calls.append(list(prompts))
        return [float(len(r)) for r in responses]

    cfg = PPOConfig(policy_path=str(sft_model_dir), output_dir=str(tmp_path), total_episodes=8,
                    batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=8,
                    eval_prompts=4)  # fmt: skip
    prompts = [f"Question number {i}?" for i in range(16)]
    result = ppo.run(cfg, {"prompts": prompts}, reward_fn=judge)
    _, held = held_out_split(16, 4, cfg.seed)
    held_texts = sorted(prompts[i] for i in held)
    evaluations = [c for c in calls if sorted(c) == held_texts]
    trained = {p for c in calls if c not in evaluations for p in c}
    assert len(evaluations) == 2 and not trained & set(held_texts) and len(trained) == 8
    history = result["history"]
    assert "eval/score_start" in history[0] and "eval/score" in history[-1]


def test_the_held_out_split_is_seeded_at_most_a_quarter_and_off_at_zero():
    train, held = held_out_split(20, 8, seed=3)
    assert len(held) == 5 and sorted(train + held) == list(range(20))
    assert held_out_split(20, 8, seed=3) == (train, held)
    assert held_out_split(20, 8, seed=4)[1] != held
    assert held_out_split(20, 0, seed=3) == (list(range(20)), [])
    assert held_out_split(3, 8, seed=3) == ([0, 1, 2], [])
