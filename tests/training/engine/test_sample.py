"""Sampling K completions per prompt with provenance; a prompt whose samples repeat is sampled
again."""

from __future__ import annotations

import json
from collections import defaultdict

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
    # From the second batch on: 10 samples in 3 batches, then any asked again for repeats.
    assert steps == list(range(2, max(s["batch"] for s in whole) + 2))
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


def test_a_crash_while_sampling_again_resumes_with_the_same_samples(sft_model_dir, tmp_path):
    whole = _near_greedy(sft_model_dir, tmp_path / "whole", resample_duplicates=2)["samples"]
    lines = (tmp_path / "whole" / "samples.jsonl").read_text().splitlines(keepends=True)
    draws = [s["draw"] for s in whole]
    # Cut inside the first draw, at the first draw's end, and inside the second draw.
    for cut in (20, draws.index(1), draws.index(1) + 3):
        crashed = tmp_path / f"crashed-{cut}"
        crashed.mkdir()
        (crashed / "samples.jsonl").write_text("".join(lines[:cut]) + lines[cut][:7])
        assert _near_greedy(sft_model_dir, crashed, resample_duplicates=2)["samples"] == whole


def _distinct(samples, *, draws=None):
    """Per prompt index, its distinct texts (of the given draws only)."""
    texts = defaultdict(set)
    for s in samples:
        if draws is None or s["draw"] in draws:
            texts[s["prompt_index"]].add(s["completion"])
    return texts


def _near_greedy(model_dir, out, resample_duplicates, temperature=0.05):
    """8 prompts, K = 4, at a temperature where the toy SFT policy mostly repeats itself."""
    cfg = SampleConfig(
        model_path=str(model_dir), output_dir=str(out), k=4, temperature=temperature,
        max_new_tokens=12, batch_size=16, seed=1, resample_duplicates=resample_duplicates,
    )  # fmt: skip
    return sample.run(
        cfg, {"prompts": [{"prompt": q, "id": i} for i, q in enumerate(questions(8))]}
    )


def test_a_prompt_whose_samples_repeat_is_sampled_again_until_they_differ(sft_model_dir, tmp_path):
    once = _near_greedy(sft_model_dir, tmp_path / "once", resample_duplicates=0)
    again = _near_greedy(sft_model_dir, tmp_path / "again", resample_duplicates=2)
    # Without a second draw some prompts have one text four times: no ranking task for them.
    assert once["metrics"]["prompts_under_two_distinct"] > 0
    assert once["metrics"]["extra_samples"] == 0 and len(once["samples"]) == 32
    # The first draw is the same (same seeds); the prompts that repeated are sampled again,
    # numbered after their first K, until every prompt has at least two different outputs.
    first = [s for s in again["samples"] if s["draw"] == 0]
    assert [s["completion"] for s in first] == [s["completion"] for s in once["samples"]]
    extra = [s for s in again["samples"] if s["draw"] > 0]
    assert extra and all(s["sample_index"] >= 4 for s in extra)
    repeated_first = {i for i, texts in _distinct(first).items() if len(texts) < 4}
    assert {s["prompt_index"] for s in extra} == repeated_first
    texts = _distinct(again["samples"])
    assert all(len(texts[i]) >= 2 for i in range(8))
    assert again["metrics"] == again["metrics"] | {
        "prompts": 8,
        "prompts_resampled": len(repeated_first),
        "extra_samples": len(extra),
        "prompts_short_of_k": sum(len(texts[i]) < 4 for i in range(8)),
        "prompts_under_two_distinct": 0,
        "samples": 32 + len(extra),
    }


def test_a_prompt_still_repeating_after_the_last_try_is_counted_not_dropped(
    sft_model_dir, tmp_path
):
    result = _near_greedy(sft_model_dir, tmp_path, resample_duplicates=2, temperature=0.01)
    texts = _distinct(result["samples"])
    stuck = [i for i in range(8) if len(texts[i]) < 2]
    assert stuck and result["metrics"]["prompts_under_two_distinct"] == len(stuck)
    # Each was asked twice more for the 3 outputs it lacked: 4 + 3 + 3 samples, all kept.
    for i in stuck:
        assert sum(s["prompt_index"] == i for s in result["samples"]) == 10
