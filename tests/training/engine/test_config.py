from __future__ import annotations

import pytest

from training.engine.config import PPOConfig, RewardConfig, SampleConfig, SFTConfig, asdict


def test_from_dict_rejects_unknown_keys_and_names_them():
    with pytest.raises(ValueError, match=r"SFTConfig: unknown keys \['learning_rate'\]"):
        SFTConfig.from_dict({"model_path": "m", "output_dir": "o", "learning_rate": 1e-3})


def test_from_dict_names_missing_required_keys():
    with pytest.raises(ValueError, match=r"missing required keys \['policy_path'\]"):
        PPOConfig.from_dict({"output_dir": "o"})


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


def test_invalid_choices_are_refused():
    with pytest.raises(ValueError, match="device"):
        SFTConfig(model_path="m", output_dir="o", device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        SFTConfig(model_path="m", output_dir="o", dtype="float16")
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(policy_path="p", output_dir="o", batch_size=16, mini_batch_size=5)
