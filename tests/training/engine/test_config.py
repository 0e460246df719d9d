"""Configs come in through `from_dict` only, and refuse what cannot run, naming the keys."""

from __future__ import annotations

import re

import pytest

from training.engine.config import (
    ConfigError,
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
        (SampleConfig, {"model_path": "m"}),
    ],
)
def test_configs_round_trip_through_plain_dicts(cls, required):
    cfg = cls.from_dict({"output_dir": "out", "seed": 3, **required})
    assert cls.from_dict(asdict(cfg)) == cfg
    with pytest.raises(AttributeError):
        cfg.seed = 4  # frozen
