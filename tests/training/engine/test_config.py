"""Configs come in through `from_dict` only, and refuse what cannot run, naming the keys."""

from __future__ import annotations

import re

import pytest

from training.engine.config import (
    ConfigError,
    CriticFreeConfig,
    DPOConfig,
    PPOConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
    asdict,
)

SFT = {"model_path": "m", "output_dir": "o"}


def test_from_dict_rejects_unknown_keys_and_names_them():
    with pytest.raises(ConfigError, match="unknown setting learning_rate;") as refused:
        SFTConfig.from_dict({**SFT, "learning_rate": 1e-3})
    assert refused.value.keys == ("learning_rate",)


def test_from_dict_names_missing_required_keys():
    with pytest.raises(ConfigError, match="missing required settings policy_path") as refused:
        PPOConfig.from_dict({"output_dir": "o"})
    assert refused.value.keys == ("policy_path",)


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"lr": "0.001"}, "lr", "lr must be a finite number, not '0.001'"),
        ({"lr": True}, "lr", "lr must be a finite number, not True"),
        ({"batch_size": 8.0}, "batch_size", "batch_size must be a whole number, not 8.0"),
        ({"batch_size": False}, "batch_size", "batch_size must be a whole number"),
        ({"max_steps": "5"}, "max_steps", "max_steps must be a whole number (or null)"),
        ({"device": 1}, "device", "device must be text, not 1"),
        ({"batch_size": 0}, "batch_size", "batch_size must be at least 1, not 0"),
        ({"max_steps": 0}, "max_steps", "max_steps must be at least 1"),
        ({"lr": -1e-5}, "lr", "lr must be >= 0"),
        ({"val_fraction": 1.0}, "val_fraction", "val_fraction must be in [0, 1)"),
        ({"device": "tpu"}, "device", "device must be one of"),
        ({"dtype": "float16"}, "dtype", "dtype must be one of"),
    ],
)
def test_a_value_of_the_wrong_type_or_out_of_range_is_refused_by_name(values, key, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        SFTConfig.from_dict({**SFT, **values})
    assert refused.value.keys == (key,)


def test_an_int_for_a_float_becomes_a_float_and_none_fits_an_optional():
    cfg = SFTConfig.from_dict({**SFT, "lr": 1, "max_steps": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.max_steps is None


def test_settings_refused_together_name_every_key():
    with pytest.raises(ConfigError, match="multiple of mini_batch_size") as refused:
        PPOConfig.from_dict({"policy_path": "p", "output_dir": "o", "batch_size": 16,
                             "mini_batch_size": 5})  # fmt: skip
    assert refused.value.keys == ("batch_size", "mini_batch_size")
    with pytest.raises(ConfigError, match="total_episodes") as refused:
        PPOConfig.from_dict({"policy_path": "p", "output_dir": "o", "total_episodes": 8})
    assert refused.value.keys == ("total_episodes", "batch_size")
    for values, key in [({"temperature": 0.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                        ({"k": 0}, "k"), ({"resample_duplicates": -1}, "resample_duplicates")]:  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            SampleConfig.from_dict({"model_path": "m", "output_dir": "o", **values})
        assert refused.value.keys == (key,)
    for values, key in [({"val_min_pairs": -1}, "val_min_pairs"),
                        ({"val_max_fraction": 1.0}, "val_max_fraction")]:  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            RewardConfig.from_dict({"model_path": "m", "output_dir": "o", **values})
        assert refused.value.keys == (key,)


def test_a_sampler_is_one_of_the_known_ones_and_ppo_refuses_vllm_by_name():
    sample = {"model_path": "m", "output_dir": "o"}
    assert SampleConfig.from_dict(sample).sampler == "auto"
    assert not SampleConfig.from_dict(sample).compile
    assert SampleConfig.from_dict({**sample, "sampler": "vllm"}).sampler == "vllm"
    with pytest.raises(ConfigError, match="sampler must be one of") as refused:
        SampleConfig.from_dict({**sample, "sampler": "hf"})
    assert refused.value.keys == ("sampler",)
    with pytest.raises(ConfigError, match="compile must be true or false") as refused:
        SampleConfig.from_dict({**sample, "compile": "yes"})
    assert refused.value.keys == ("compile",)
    ppo = {"policy_path": "p", "output_dir": "o"}
    assert PPOConfig.from_dict({**ppo, "sampler": "builtin", "compile": True}).compile
    with pytest.raises(ConfigError, match="PPO rollouts use the built-in sampler") as refused:
        PPOConfig.from_dict({**ppo, "sampler": "vllm"})
    assert refused.value.keys == ("sampler",)


@pytest.mark.parametrize(
    ("cls", "required"),
    [
        (SFTConfig, {"model_path": "m"}),
        (RewardConfig, {"model_path": "m"}),
        (PPOConfig, {"policy_path": "p", "reward_model_path": "r"}),
        (CriticFreeConfig, {"policy_path": "p", "reward_model_path": "r", "estimator": "rloo"}),
        (SampleConfig, {"model_path": "m"}),
    ],
)
def test_configs_round_trip_through_plain_dicts(cls, required):
    cfg = cls.from_dict({"output_dir": "out", "seed": 3, **required})
    assert cls.from_dict(asdict(cfg)) == cfg
    with pytest.raises(AttributeError):
        cfg.seed = 4  # frozen


PPO = {"policy_path": "p", "output_dir": "o"}


@pytest.mark.parametrize(
    ("values", "keys", "message"),
    [
        ({"master_weights": "float16"}, ("master_weights",), "master_weights must be one of"),
        ({"master_weights": "bfloat16", "dtype": "float32"}, ("master_weights", "dtype"),
         "master_weights='bfloat16' computes in bf16"),
        ({"gradient_checkpointing": 1}, ("gradient_checkpointing",), "must be true or false"),
        ({"lora_rank": -4}, ("lora_rank",), "lora_rank must be >= 0, not -4"),
        ({"lora_rank": 4.0}, ("lora_rank",), "lora_rank must be a whole number"),
        ({"lora_alpha": 0}, ("lora_alpha",), "lora_alpha must be > 0"),
        ({"lora_dropout": 1.0}, ("lora_dropout",), "lora_dropout must be in [0, 1)"),
        ({"lora_target_modules": ""}, ("lora_target_modules",), "'all-linear' or comma-separated"),
        ({"lora_target_modules": "q_proj,v proj"}, ("lora_target_modules",), "module names"),
        ({"lora_target_modules": "head"}, ("lora_target_modules",), "head is trained fully"),
        ({"lora_target_modules": "q_proj,lm_head"}, ("lora_target_modules",), "cannot name lm_head"),
    ],
)  # fmt: skip
def test_a_precision_or_lora_setting_that_cannot_run_is_refused_by_name(values, keys, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        SFTConfig.from_dict({**SFT, **values})
    assert refused.value.keys == keys


def test_lora_dropout_is_refused_where_ratios_compare_deterministic_forwards():
    assert SFTConfig.from_dict({**SFT, "lora_rank": 8, "lora_dropout": 0.05}).lora_dropout == 0.05
    for cls, required in [(PPOConfig, PPO), (DPOConfig, SFT)]:
        with pytest.raises(ConfigError, match="lora_dropout must be 0") as refused:
            cls.from_dict({**required, "lora_rank": 8, "lora_dropout": 0.05})
        assert refused.value.keys == ("lora_dropout",)


def test_frozen_dtype_belongs_to_stages_with_frozen_models_and_lora_to_training_stages():
    with pytest.raises(ConfigError, match="frozen_dtype must be one of") as refused:
        PPOConfig.from_dict({**PPO, "frozen_dtype": "float16"})
    assert refused.value.keys == ("frozen_dtype",)
    with pytest.raises(ConfigError, match="unknown setting frozen_dtype"):
        SFTConfig.from_dict({**SFT, "frozen_dtype": "bfloat16"})  # SFT holds no frozen model
    with pytest.raises(ConfigError, match="unknown setting lora_rank"):
        SampleConfig.from_dict({**SFT, "lora_rank": 4})  # sampling trains nothing


def test_the_precision_and_lora_defaults_are_todays_full_fp32_training():
    cfg = asdict(PPOConfig.from_dict(PPO))
    assert {k: cfg[k] for k in cfg if k.startswith(("lora", "master", "frozen", "gradient"))} == {
        "frozen_dtype": "auto", "master_weights": "float32", "gradient_checkpointing": False,
        "lora_rank": 0, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_modules": "all-linear",
    }  # fmt: skip
    assert SFTConfig.from_dict({**SFT, "lora_target_modules": " q_proj, v_proj"}).lora_targets() == [
        "q_proj", "v_proj",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "keys", "message"),
    [
        ({"processes": 0}, ("processes",), "processes must be at least 1"),
        ({"processes": 2, "lora_rank": 8}, ("processes", "lora_rank"), "LoRA trains in one"),
        ({"processes": 4, "batch_size": 2}, ("batch_size", "processes"), "at least processes"),
        ({"collective_timeout_s": 0}, ("collective_timeout_s",), "must be > 0"),
    ],
)
def test_several_processes_refuse_what_they_cannot_run(values, keys, message):
    for config_class in (SFTConfig, RewardConfig):
        with pytest.raises(ConfigError, match=message) as refused:
            config_class.from_dict({"model_path": "m", "output_dir": "o", **values})
        assert refused.value.keys == keys
    assert SFTConfig.from_dict({"model_path": "m", "output_dir": "o"}).processes is None


@pytest.mark.parametrize(
    ("make", "message", "field"),
    [
        (lambda: PPOConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=2, batch_size=6,
                           mini_batch_size=3), "mini_batch_size (3) must be a multiple of"
         " processes (2)", "mini_batch_size"),
        (lambda: PPOConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=3, batch_size=4,
                           mini_batch_size=4), "batch_size (4) must be a multiple of processes"
         " (3)", "batch_size"),
        (lambda: PPOConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=2, compile=True),
         "compile samples in one process", "processes"),
        (lambda: PPOConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=2, ptx_coef=0.1,
                           ptx_batch_size=1), "ptx_batch_size (1) must be at least processes (2)",
         "processes"),
        (lambda: CriticFreeConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=2,
                                  batch_size=1, group_size=3, mini_batch_size=3),
         "batch_size x group_size (3) must be a multiple of processes (2)", "group_size"),
    ],
    ids=["ppo-minibatch", "ppo-batch", "ppo-compile", "ppo-ptx", "critic-free-responses"],
)  # fmt: skip
def test_an_online_stage_that_its_processes_cannot_share_is_refused(make, message, field):
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        make()
    assert field in refused.value.keys


def test_critic_free_processes_share_responses_not_prompts():
    """One prompt x 4 responses is 4 episodes a step: two processes take two each."""
    cfg = CriticFreeConfig(policy_path="m", reward_model_path="r", output_dir="o", processes=2, batch_size=1,
                           group_size=4, mini_batch_size=4)  # fmt: skip
    assert cfg.shared_batch_problem(2) == "" and cfg.shared_batch_problem(4) == ""
    assert "multiple of processes (3)" in cfg.shared_batch_problem(3)
