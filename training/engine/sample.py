"""Sample K completions per prompt for the ranking queue (and for evaluation).

Every sample carries its provenance (model, temperature, top_p, max_new_tokens, seed, whether it
ended with EOS, the sampler) as plain data. Samples are appended to `output_dir/samples.jsonl` one batch at a
time, each batch with its own seed, so a crashed run continues after the last complete batch and
produces the samples it would have produced without the crash (`checkpoint_every` is not used:
every batch is saved). The samples come from the built-in sampler or, with `sampler` "vllm" (or
"auto" on a CUDA worker that has vLLM installed), from vLLM (training/engine/sampler.py).
data: {"prompts": [prompt or {"prompt": ..., "id": ...}, ...]}
"""

from __future__ import annotations

import json
import os
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


def _complete_batches(path: Path, batch_size: int) -> int:
    """Batches already written whole; anything after them (a torn write) is cut off."""
    if not path.is_file():
        return 0
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    done = len(lines) // batch_size
    keep = "".join(json.dumps(s) + "\n" for s in lines[: done * batch_size])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(keep)
    os.replace(tmp, path)
    return done


def _read_samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


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
    jobs = [(i, j) for i in range(len(records)) for j in range(cfg.k)]  # (prompt, sample index)
    batches = chunks(jobs, cfg.batch_size)
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    start = _complete_batches(samples_path, cfg.batch_size)

    for number in range(start, len(batches)):
        batch_jobs = batches[number]
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
        lines = []
        for (i, j), completion, length, ended in zip(
            batch_jobs, texts, lengths, finished, strict=True
        ):
            record = records[i]
            lines.append(
                {
                    "prompt_index": i,
                    "prompt_id": record.get("id") if isinstance(record, dict) else None,
                    "sample_index": j,
                    "prompt": prompt_of(record),
                    "completion": completion,
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
            )
        with open(samples_path, "a") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        if on_progress is not None:
            metrics = {
                "eos_rate": sum(finished) / len(finished),
                "mean_length": sum(lengths) / len(lengths),
            }
            on_progress(number + 1, len(batches), metrics)

    samples = _read_samples(samples_path)
    result = {
        "output_dir": str(cfg.output_dir),
        "samples_path": str(samples_path),
        "total_steps": len(batches),
        "metrics": {
            "samples": len(samples),
            "eos_rate": sum(s["provenance"]["finished_with_eos"] for s in samples)
            / max(len(samples), 1),
            "mean_length": sum(s["provenance"]["num_tokens"] for s in samples)
            / max(len(samples), 1),
        },
    }
    checkpoint.write_result(cfg.output_dir, result)
    return {**result, "samples": samples}
