from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.utils import logging

from tests.training.engine.toy_model import build_tiny_llama, build_toy_model

logging.disable_progress_bar()
# Tiny tensors gain nothing from a second thread, and on a shared 2-core machine spinning OpenMP
# threads slow every op tenfold.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 64-wide GPT-2 with a byte-level BPE tokenizer, saved with safetensors."""
    return build_toy_model(tmp_path_factory.mktemp("toy-model"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide Llama with the toy tokenizer, saved with safetensors."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def sft_model_dir(toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model after SFT on question -> sentence demonstrations: it answers in sentences
    that end with EOS, so PPO tests start from a sensible policy (as InstructGPT's does)."""
    from tests.training.engine.toy_model import demonstrations
    from training.engine import sft
    from training.engine.config import SFTConfig

    cfg = SFTConfig(
        model_path=str(toy_model_dir),
        output_dir=str(tmp_path_factory.mktemp("sft-run")),
        max_steps=100,
        batch_size=16,
        lr=3e-3,
        checkpoint_every=0,
        eval_every=100,
    )
    return Path(sft.run(cfg, {"demonstrations": demonstrations(256)})["model_dir"])


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (SideBySide runs only with two or more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reward_model_dir(sft_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model trained briefly from the SFT model on rankings that prefer "banana"."""
    from tests.training.engine.toy_model import banana_rankings, demonstrations
    from training.engine import reward
    from training.engine.config import RewardConfig

    cfg = RewardConfig(
        model_path=str(sft_model_dir),
        output_dir=str(tmp_path_factory.mktemp("rm-run")),
        max_steps=10,
        batch_size=8,
        lr=1e-3,
    )
    data = {"rankings": banana_rankings(80), "demonstrations": demonstrations(16)}
    return Path(reward.run(cfg, data)["model_dir"])
