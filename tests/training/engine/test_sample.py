"""Sampling K completions per prompt with provenance."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.engine.toy_model import questions
from training.engine import sample
from training.engine.config import SampleConfig

pytestmark = pytest.mark.slow  # trains a model on CPU


def test_sample_returns_k_completions_per_prompt_with_provenance(sft_model_dir, tmp_path):
    prompts = [{"prompt": q, "id": 100 + i} for i, q in enumerate(questions(4))]
    cfg = SampleConfig(
        model_path=str(sft_model_dir),
        output_dir=str(tmp_path),
        k=3,
        batch_size=5,
        max_new_tokens=12,
        temperature=0.9,
        top_p=0.95,
        seed=7,
    )
    progress = []
    result = sample.run(cfg, {"prompts": prompts}, on_progress=lambda *a: progress.append(a))
    samples = result["samples"]
    assert len(samples) == 12
    assert sorted((s["prompt_id"], s["sample_index"]) for s in samples) == [
        (100 + i, j) for i in range(4) for j in range(3)
    ]
    for s in samples:
        provenance = s["provenance"]
        assert provenance["temperature"] == 0.9
        assert provenance["top_p"] == 0.95
        assert provenance["max_new_tokens"] == 12
        assert isinstance(provenance["seed"], int)
        assert isinstance(provenance["finished_with_eos"], bool)
        assert provenance["num_tokens"] <= 12
        if not provenance["finished_with_eos"]:
            assert provenance["num_tokens"] == 12
        assert isinstance(s["completion"], str)
        json.dumps(s)  # plain data
    assert any(s["provenance"]["finished_with_eos"] for s in samples)  # the SFT model stops
    assert [step for step, _, _ in progress] == [1, 2, 3]


def test_sampling_resumes_after_the_last_complete_batch_with_the_same_samples(
    sft_model_dir, tmp_path
):
    prompts = questions(5)

    def config(out):
        return SampleConfig(
            model_path=str(sft_model_dir), output_dir=str(out), k=2, batch_size=4, max_new_tokens=8
        )

    whole = sample.run(config(tmp_path / "whole"), {"prompts": prompts})["samples"]

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    lines = (tmp_path / "whole" / "samples.jsonl").read_text().splitlines(keepends=True)
    # One full batch of 4 written, then a torn write in the middle of the second batch.
    (crashed / "samples.jsonl").write_text("".join(lines[:5]) + lines[5][:10])
    steps = []
    resumed = sample.run(
        config(crashed), {"prompts": prompts}, on_progress=lambda s, *_: steps.append(s)
    )
    assert steps == [2, 3]
    assert resumed["samples"] == whole


def test_sampling_from_bf16_weights_on_the_cpu_gives_k_completions(
    sft_model_dir, tmp_path, monkeypatch
):
    loaded = []
    load_causal_lm = sample.load_causal_lm

    def load_and_keep(*args):
        loaded.append(load_causal_lm(*args))
        return loaded[-1]

    monkeypatch.setattr(sample, "load_causal_lm", load_and_keep)
    cfg = SampleConfig(model_path=str(sft_model_dir), output_dir=str(tmp_path), k=2,
                       max_new_tokens=8, frozen_dtype="bfloat16")  # fmt: skip
    result = sample.run(cfg, {"prompts": questions(3)})
    assert loaded[0].dtype == torch.bfloat16
    assert len(result["samples"]) == 6
    assert any(s["completion"] for s in result["samples"])
