"""Sample K completions per prompt for the ranking queue (and for evaluation).

A prompt whose K samples repeat one another is sampled again: up to `resample_duplicates` more
times, each time as many new samples as it lacks distinct ones, so that its ranking task can
show K different outputs (a small policy often repeats itself; a task of repeats asks a labeler
to rank the same text against itself). What is still short after that is counted in the result's
metrics, never dropped silently; the server makes a task of the distinct ones when 2 remain.

Every sample carries its provenance (model, temperature, top_p, max_new_tokens, seed, whether it
ended with EOS, the sampler, which draw it came from) as plain data. Samples are appended to
`output_dir/samples.jsonl` one batch at a time, each batch with its own seed and its number, so a
crashed run continues after the last complete batch and produces the samples it would have
produced without the crash (`checkpoint_every` is not used: every batch is saved). Which prompts
are sampled again depends only on the samples before, so a resumed run plans the same draws. The
samples come from the built-in sampler or, with `sampler` "vllm" (or "auto" on a CUDA worker that
has vLLM installed), from vLLM (training/engine/sampler.py).
data: {"prompts": [prompt or {"prompt": ..., "id": ...}, ...]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from training.engine import checkpoint, rollout
from training.engine.config import SampleConfig
from training.engine.data import chunks, encode_prompts, prompt_of
from training.engine.lm import disable_dropout, frozen_role, load_causal_lm, load_tokenizer
from training.engine.precision import resolve_device, resolve_precision, seed_everything
from training.engine.progress import ProgressFn
from training.engine.sampler import BuiltinSampler, Sampler, choose
from training.engine.vllm_sampler import VLLMSampler

SAMPLES_FILE = "samples.jsonl"


def _complete_batches(path: Path) -> list[dict[str, Any]]:
    """The samples of the batches already written whole; anything after them (a torn write, a
    batch cut short) is cut off the file."""
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if any("batch" not in s for s in lines):
        lines = []  # written before batches were numbered: sampled again from the start
    # Batches are written in order, so only the last one can be incomplete.
    if lines and sum(s["batch"] == lines[-1]["batch"] for s in lines) < lines[-1]["batch_lines"]:
        lines = [s for s in lines if s["batch"] != lines[-1]["batch"]]
    keep = "".join(json.dumps(s) + "\n" for s in lines)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(keep)
    os.replace(tmp, path)
    return lines


def _batch_metrics(lines: list[dict[str, Any]]) -> dict[str, float]:
    finished = [s["provenance"]["finished_with_eos"] for s in lines]
    lengths = [s["provenance"]["num_tokens"] for s in lines]
    return {"eos_rate": sum(finished) / len(finished), "mean_length": sum(lengths) / len(lengths)}


def _read_samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _distinct_texts(samples: list[dict[str, Any]], n_prompts: int) -> list[set[str]]:
    texts: list[set[str]] = [set() for _ in range(n_prompts)]
    for s in samples:
        texts[s["prompt_index"]].add(s["completion"])
    return texts


def resample_jobs(samples: list[dict[str, Any]], n_prompts: int, k: int) -> list[tuple[int, int]]:
    """(prompt, sample index) of the next draw: for each prompt with fewer than `k` distinct
    texts, as many new samples as it lacks, numbered after its last one."""
    texts = _distinct_texts(samples, n_prompts)
    drawn = [0] * n_prompts
    for s in samples:
        drawn[s["prompt_index"]] = max(drawn[s["prompt_index"]], s["sample_index"] + 1)
    return [(i, drawn[i] + extra) for i in range(n_prompts) for extra in range(k - len(texts[i]))]


def distinct_counts(samples: list[dict[str, Any]], n_prompts: int, k: int) -> dict[str, int]:
    """How many prompts end short of K distinct samples, and short of the 2 a ranking needs."""
    counts = [len(t) for t in _distinct_texts(samples, n_prompts)]
    return {
        "prompts": n_prompts,
        "prompts_resampled": len({s["prompt_index"] for s in samples if s["draw"] > 0}),
        "extra_samples": sum(s["draw"] > 0 for s in samples),
        "prompts_short_of_k": sum(c < k for c in counts),
        "prompts_under_two_distinct": sum(c < 2 for c in counts) if k >= 2 else 0,
    }


def make_sampler(
    cfg: SampleConfig, backend: str, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> Sampler:
    """vLLM on the model directory, or the built-in loop on the model loaded here (frozen, in
    `frozen_dtype`)."""
    precision = resolve_precision(device, cfg.dtype, frozen_dtype=cfg.frozen_dtype)
    if backend == "vllm":
        return VLLMSampler(
            cfg.model_path,
            tokenizer,
            device=device,
            dtype=precision.frozen,
            max_model_len=cfg.max_prompt_length + cfg.max_new_tokens,
            seed=cfg.seed,
        )
    model = load_causal_lm(cfg.model_path, tokenizer, device, frozen_role(precision))
    disable_dropout(model)
    return BuiltinSampler(model, tokenizer, precision.amp, compile=cfg.compile)


def _sample_batch(
    cfg: SampleConfig,
    sampler: Sampler,
    tokenizer: PreTrainedTokenizerBase,
    records: list[Any],
    prompt_ids: list[list[int]],
    batch_jobs: Sequence[tuple[int, int]],
    *,
    number: int,
    draw: int,
    backend: str,
) -> list[dict[str, Any]]:
    """One batch's samples as the lines of samples.jsonl, each with its provenance."""
    seed = cfg.seed * 1_000_003 + number
    _, generation = sampler.generate(
        [prompt_ids[i] for i, _ in batch_jobs],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=seed,
    )
    texts = rollout.decode(tokenizer, generation.tokens)
    lengths = generation.response_mask.sum(1).tolist()
    finished = generation.finished.tolist()
    return [
        {
            "prompt_index": i,
            "prompt_id": records[i].get("id") if isinstance(records[i], dict) else None,
            "sample_index": j,
            "prompt": prompt_of(records[i]),
            "completion": completion,
            "batch": number,
            "batch_lines": len(batch_jobs),
            "draw": draw,  # 0: the K asked for; 1..: a draw again for a prompt that repeated
            "provenance": {
                "model_path": str(cfg.model_path),
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": seed,
                "finished_with_eos": ended,
                "num_tokens": length,
                "sampler": backend,
            },
        }
        for (i, j), completion, length, ended in zip(
            batch_jobs, texts, lengths, finished, strict=True
        )
    ]


# A launcher finds a stage's config class beside its run(): training.engine.sample.Config.
Config = SampleConfig


def run(cfg: SampleConfig, data: dict[str, Any], *, on_progress: ProgressFn | None = None) -> dict:
    samples_path = Path(cfg.output_dir) / SAMPLES_FILE
    if (result := checkpoint.finished_result(cfg.output_dir)) is not None:
        return {**result, "samples": _read_samples(samples_path)}
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(cfg.model_path)
    backend = choose(cfg.sampler, device)
    sampler = make_sampler(cfg, backend, tokenizer, device)

    records = data["prompts"]
    prompt_ids = encode_prompts(tokenizer, [prompt_of(r) for r in records], cfg.max_prompt_length)
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples = _complete_batches(samples_path)
    done = {s["batch"] for s in samples}

    # Draw 0 asks K per prompt; draws 1.. ask again for the prompts whose samples repeat, planned
    # from the draws before (a resumed run's later batches are already in `samples`).
    jobs = [(i, j) for i in range(len(records)) for j in range(cfg.k)]  # (prompt, sample index)
    number = 0  # batches are numbered across draws: a batch's seed and its place in the file
    for draw in range(cfg.resample_duplicates + 1):
        if draw:
            jobs = resample_jobs([s for s in samples if s["draw"] < draw], len(records), cfg.k)
        batches = chunks(jobs, cfg.batch_size)
        planned = number + len(batches)  # grows when a draw asks again
        for batch_jobs in batches:
            if number not in done:
                lines = _sample_batch(
                    cfg, sampler, tokenizer, records, prompt_ids, batch_jobs,
                    number=number, draw=draw, backend=backend,
                )  # fmt: skip
                with open(samples_path, "a") as f:
                    f.write("".join(json.dumps(line) + "\n" for line in lines))
                    f.flush()
                    os.fsync(f.fileno())
                samples += lines
                if on_progress is not None:
                    on_progress(number + 1, planned, _batch_metrics(lines))
            number += 1

    samples = _read_samples(samples_path)
    result = {
        "output_dir": str(cfg.output_dir),
        "samples_path": str(samples_path),
        "total_steps": number,
        "metrics": {
            **distinct_counts(samples, len(records), cfg.k),
            "samples": len(samples),
            "eos_rate": sum(s["provenance"]["finished_with_eos"] for s in samples)
            / max(len(samples), 1),
            "mean_length": sum(s["provenance"]["num_tokens"] for s in samples)
            / max(len(samples), 1),
        },
    }
    checkpoint.write_result(cfg.output_dir, result)
    return {**result, "samples": samples}
