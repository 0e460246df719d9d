"""LoRA adapters and activation checkpointing (training/engine/memory.py): merged adapters keep
the model's function, disabled ones give the base model, checkpointing changes no number."""

from __future__ import annotations

import pytest
import torch

from tests.training.engine.helpers import CPU, assert_close_gradients, gradients
from tests.training.engine.test_resume import without_timings
from tests.training.engine.toy_model import (
    banana_rankings,
    demonstrations,
    letter_reward,
    questions,
)
from training.engine import memory, ppo, reward, sft
from training.engine.config import PPOConfig, RewardConfig, SFTConfig
from training.engine.data import collate_sft, encode_demonstrations
from training.engine.generation import sample
from training.engine.lm import Role, end_training, load_causal_lm, load_tokenizer
from training.engine.memory import LoraSettings

LORA = LoraSettings(rank=4, alpha=16, dropout=0.0, target_modules="all-linear")


@pytest.fixture(params=["toy_model_dir", "tiny_llama_dir"])
def model_dir(request):
    """GPT-2 (Conv1D layers, tied output projection) and Llama (nn.Linear, untied)."""
    return request.getfixturevalue(request.param)


def sft_batch(tokenizer, count: int = 4) -> dict[str, torch.Tensor]:
    examples = encode_demonstrations(tokenizer, demonstrations(count), 64)
    return collate_sft(examples, tokenizer.pad_token_id)


def lm_with_trained_adapters(model_dir, tokenizer):
    """A causal LM with LoRA adapters whose B is not 0 (as after training)."""
    torch.manual_seed(0)
    model = load_causal_lm(model_dir, tokenizer, CPU, Role(lora=LORA)).eval()
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_lora_adapts_every_linear_layer_but_the_output_projection_and_freezes_the_rest(
    model_dir,
):
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, tokenizer, CPU, Role(lora=LORA))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers = {n.rsplit(".lora_", 1)[0] for n in trainable}
    assert trainable == {f"{layer}.lora_{ab}.default.weight" for layer in layers for ab in "AB"}
    assert not any("lm_head" in layer or "wte" in layer for layer in layers)
    assert len(layers) == (4 if "gpt2" in model.config.model_type else 7) * 2  # per block, 2 blocks


def test_merged_adapters_give_the_adapted_models_logits_from_a_plain_model(model_dir):
    tokenizer = load_tokenizer(model_dir)
    model = lm_with_trained_adapters(model_dir, tokenizer)
    batch = sft_batch(tokenizer)
    with torch.no_grad():
        adapted = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    end_training(model)
    with torch.no_grad():
        merged = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    assert not memory.has_adapters(model) and not hasattr(model, "peft_config")
    plain = load_causal_lm(model_dir, tokenizer, CPU)
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_with_its_adapters_disabled_a_model_is_its_base_model_again(model_dir):
    tokenizer = load_tokenizer(model_dir)
    model = lm_with_trained_adapters(model_dir, tokenizer)
    base = load_causal_lm(model_dir, tokenizer, CPU).eval()
    batch = sft_batch(tokenizer)
    with torch.no_grad():
        expected = base(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with memory.adapters_disabled(model):
            without = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        adapted = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(without, expected)
    assert not torch.allclose(adapted, expected)  # and back on afterwards


def response_loss_and_gradients(model_dir, role: Role, batch) -> tuple[torch.Tensor, dict, int]:
    """SFT's loss on the batch, its gradients, and how often the first block's attention ran."""
    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(0)  # the same LoRA initialisation for both roles
    model = load_causal_lm(model_dir, tokenizer, CPU, role).train()
    calls = []
    model.base_model.layers[0].self_attn.register_forward_hook(lambda *args: calls.append(1))
    loss = sft.response_loss(model, batch)
    loss.backward()
    return loss.detach(), gradients(model), len(calls)


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_activation_checkpointing_recomputes_each_block_and_changes_no_gradient(
    tiny_llama_dir, lora
):
    batch = sft_batch(load_tokenizer(tiny_llama_dir), 6)
    plain = response_loss_and_gradients(tiny_llama_dir, Role(lora=lora), batch)
    checkpointed = response_loss_and_gradients(
        tiny_llama_dir, Role(lora=lora, gradient_checkpointing=True), batch
    )
    torch.testing.assert_close(checkpointed[0], plain[0])
    assert_close_gradients(checkpointed[1], plain[1])
    assert (plain[2], checkpointed[2]) == (1, 2)  # the backward ran the block's forward again


def test_a_checkpointed_model_in_training_mode_samples_with_its_cache(toy_model_dir, monkeypatch):
    """GPT-2 in training mode under checkpointing passes its blocks no cache: sampling switches
    the model to eval mode meanwhile, and gives what a plain model gives."""
    monkeypatch.setenv("INSTRUCTLOOP_CPU_FAST", "0")  # the same (HF) decoder for both
    tokenizer = load_tokenizer(toy_model_dir)
    prompts = [tokenizer.encode(q) for q in questions(3)]
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p).flip(0) for p in prompts], batch_first=True,
        padding_value=tokenizer.pad_token_id,
    ).flip(1)  # fmt: skip
    mask = (ids != tokenizer.pad_token_id).long()
    outputs = []
    for role in (Role(), Role(gradient_checkpointing=True)):
        model = load_causal_lm(toy_model_dir, tokenizer, CPU, role)
        model.train() if role.gradient_checkpointing else model.eval()
        generation = sample(model, ids, mask, max_new_tokens=8, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
        outputs.append(generation.tokens)
        assert model.training == role.gradient_checkpointing  # its mode is given back
    torch.testing.assert_close(outputs[1], outputs[0])


def count_checkpointed_calls(monkeypatch) -> list[int]:
    """A list that grows by one per checkpointed layer call of models loaded from now on."""
    calls: list[int] = []
    enable = memory.enable_checkpointing

    def enable_and_count(model):
        enable(model)
        for layer in model.modules():
            if getattr(layer, "gradient_checkpointing", False) is True:
                run = layer._gradient_checkpointing_func
                layer._gradient_checkpointing_func = lambda *a, run=run, **k: (
                    calls.append(1) or run(*a, **k)
                )

    monkeypatch.setattr(memory, "enable_checkpointing", enable_and_count)
    return calls


def run_stage(stage: str, model_dir, output_dir, **settings) -> list[dict]:
    common = {"output_dir": str(output_dir), "checkpoint_every": 0, "lr": 1e-2, **settings}
    if stage == "sft":
        cfg = SFTConfig(model_path=str(model_dir), max_steps=3, batch_size=4, **common)
        return sft.run(cfg, {"demonstrations": demonstrations(16)})["history"]
    if stage == "reward":
        cfg = RewardConfig(model_path=str(model_dir), max_steps=3, batch_size=4, **common)
        data = {"rankings": banana_rankings(16), "demonstrations": demonstrations(4)}
        return reward.run(cfg, data)["history"]
    cfg = PPOConfig(policy_path=str(model_dir), total_episodes=12, batch_size=4,
                    mini_batch_size=2, max_new_tokens=6, **common)  # fmt: skip
    return ppo.run(cfg, {"prompts": questions(12)}, reward_fn=letter_reward)["history"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward", "ppo"])
def test_a_checkpointed_run_logs_what_a_plain_one_does_on_a_tiny_llama(
    stage, tiny_llama_dir, tmp_path, monkeypatch
):
    """Three steps with and without activation checkpointing (reward training: whole sequences
    instead of shared prompts, since checkpointing keeps no cache), with LoRA as well."""
    plain = run_stage(stage, tiny_llama_dir, tmp_path / "plain", lora_rank=4)
    recomputed = count_checkpointed_calls(monkeypatch)
    checkpointed = run_stage(stage, tiny_llama_dir, tmp_path / "checkpointed", lora_rank=4,
                             gradient_checkpointing=True)  # fmt: skip
    assert len(plain) == 3 and recomputed  # checkpointing did act
    # rel 3e-4: the reward stage's two paths (shared-prompt cache vs whole sequences) sum the
    # same terms in another order; three training steps carry that rounding into val/loss.
    for ours, theirs in zip(without_timings(checkpointed), without_timings(plain), strict=True):
        assert ours == pytest.approx(theirs, rel=3e-4, abs=1e-6)
