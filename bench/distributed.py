"""SFT, the reward model, DPO or PPO in N processes (FSDP2; gloo on CPU, NCCL on GPUs) against 1
process, same global batch: how far apart the losses, gradient norms, validation losses (PPO:
rewards, KL, policy and value losses; DPO: pair accuracies and margins too) and final weights
are.

    OMP_NUM_THREADS=1 python -m bench.distributed [--stage sft|reward|dpo|ppo] [--processes 2]
        [--steps 20]

The 1-process run is `python -m training.engine STAGE`, the N-process one the same module under
`torchrun --standalone --nproc-per-node N`. Both start from the offline tiny base model
(var/models/tiny-base, no dropout) on the same synthetic demonstrations; PPO from an SFT model and
a reward model trained first, in one process, from it. Printed only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT  # noqa: E402

THINGS = ["bread", "tea", "a lamp", "the river", "a violin", "snow", "a garden", "the moon"]


def demonstrations(count: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {
            "prompt": f"Describe {rng.choice(THINGS)} in one sentence.",
            "completion": f"It is {rng.choice(['quiet', 'bright', 'old', 'warm'])} like "
            f"{rng.choice(THINGS)}.",
        }
        for _ in range(count)
    ]


def rankings(count: int, seed: int = 0) -> list[dict]:
    """A demonstration's answer ranked above another prompt's (K = 2)."""
    answers = demonstrations(count, seed)
    others = demonstrations(count, seed + 1)
    return [
        {"prompt": a["prompt"], "completions": [a["completion"], f"No. {b['prompt']}"],
         "ranks": [1, 2]}
        for a, b in zip(answers, others, strict=True)
    ]  # fmt: skip


def job(stage: str, run_dir: Path, model: Path, args: argparse.Namespace) -> dict:
    config = {
        "model_path": str(model), "output_dir": str(run_dir), "max_steps": args.steps,
        "batch_size": args.batch_size, "lr": 1e-3, "checkpoint_every": 0,
        "eval_every": 5, "val_fraction": 0.2, "device": args.device,
    }  # fmt: skip
    data: dict = {"demonstrations": demonstrations(args.examples)}
    if stage == "reward":
        config |= {"val_min_pairs": 0, "lr": 1e-5}  # the rankings are easy: learned slowly
        data = {"rankings": rankings(args.examples), "demonstrations": demonstrations(16)}
    if stage == "dpo":
        config |= {"lr": 1e-5, "beta": 0.1}  # the rankings are easy: learned slowly
        data = {"rankings": rankings(args.examples)}
    if stage == "ppo":  # model: (SFT, reward model)
        policy, reward = args.ppo_models
        config = {
            "policy_path": str(policy), "reward_model_path": str(reward),
            "output_dir": str(run_dir), "total_episodes": args.steps * args.batch_size,
            "batch_size": args.batch_size, "mini_batch_size": args.batch_size // 2,
            "max_new_tokens": 24, "lr": 3e-5, "value_lr": 3e-5, "ptx_coef": 0.1,
            "checkpoint_every": 0, "device": args.device,
        }  # fmt: skip
        prompts = [d["prompt"] for d in demonstrations(args.examples, seed=2)]
        data = {"prompts": prompts, "demonstrations": demonstrations(args.examples)}
    return {"config": config, "data": data}


def run(
    run_dir: Path, model: Path, args: argparse.Namespace, processes: int, stage: str | None = None
) -> tuple[dict, float]:
    stage = stage or args.stage
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps(job(stage, run_dir, model, args)))
    engine = ["-m", "training.engine", stage, "--run-dir", str(run_dir)]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command = [sys.executable, *launcher, *engine]
    else:
        command = [sys.executable, *engine]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return json.loads((run_dir / "outcome.json").read_text()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=["sft", "reward", "dpo", "ppo"], default="sft")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=ROOT / "var" / "models" / "tiny-base")
    args = parser.parse_args()
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        if args.stage == "ppo":  # its SFT model and reward model, each trained in one process
            sft, _ = run(Path(tmp) / "sft", args.model, args, 1, "sft")
            reward, _ = run(Path(tmp) / "reward", Path(sft["model_dir"]), args, 1, "reward")
            args.ppo_models = (sft["model_dir"], reward["model_dir"])
        one, one_s = run(Path(tmp) / "one", args.model, args, 1)
        many, many_s = run(Path(tmp) / "many", args.model, args, args.processes)
        print(f"1 process: {one_s:.1f} s; {args.processes} processes: {many_s:.1f} s (wall,"
              " model loads included)")  # fmt: skip
        names = ["train/loss", "train/grad_norm", "val/loss"]
        if args.stage in ("reward", "dpo"):
            names += ["train/pair_accuracy", "val/pair_accuracy"]
        if args.stage == "dpo":
            names += ["train/margin"]
        if args.stage == "ppo":
            names = ["reward/score", "kl/k1", "loss/policy", "loss/value", "loss/ptx",
                     "policy/approx_kl", "value/explained_variance", "response/length"]  # fmt: skip
        for name in names:
            pairs = [(a[name], b[name]) for a, b in zip(one["history"], many["history"],
                                                        strict=True) if name in a]  # fmt: skip
            worst = max(abs(a - b) for a, b in pairs)
            relative = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
            apart = [i + 1 for i, (a, b) in enumerate(pairs) if abs(a - b) > 1e-4]
            print(f"{name}: max |difference| {worst:.2e} (relative {relative:.2e}) over"
                  f" {len(pairs)} steps; first {pairs[0][0]:.4f}, last {pairs[-1][0]:.4f};"
                  f" apart by more than 1e-4 from the {apart[0] if apart else '-'}th")  # fmt: skip
        saved = ["model_dir", "value_model_dir"] if args.stage == "ppo" else ["model_dir"]
        for directory in saved:
            ones = load_file(str(Path(one[directory]) / "model.safetensors"))
            manys = load_file(str(Path(many[directory]) / "model.safetensors"))
            worst_weight = max(float((ones[k] - manys[k]).abs().max()) for k in ones)
            print(f"final weights ({directory}): max |difference| {worst_weight:.2e} over"
                  f" {len(ones)} tensors")  # fmt: skip
        if args.stage == "reward":
            offsets = one["metrics"]["score_offset"], many["metrics"]["score_offset"]
            print(
                f"score offset: {offsets[0]:.5f} (1 process), {offsets[1]:.5f} ({args.processes})"
            )


if __name__ == "__main__":
    main()
