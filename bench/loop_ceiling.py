"""How far can PPO move the SFT policy at all? The closed loop's quality ceiling, offline.

    python bench/loop_ceiling.py [--model var/models/tiny-base] [--episodes 4096] [--lr 1e-4]

`bench/closed_loop.py` asks for a gold-quality win rate of PPO over SFT; this separates the two
things that bound it. Same stages as the loop, called directly (no database, no HTTP):

1. SFT on simulated labelers' demonstrations (the loop's crowd and settings);
2. PPO three ways from that SFT policy, with the same PPO settings:
   - against the **gold judge itself** (`training.demo.families.judge` as the reward function):
     a perfect reward model, so what is left is what PPO can do with this policy;
   - against a reward model trained on simulated rankings of SFT samples (the loop's path);
   - against a trivially learnable reward ("start the answer with 'The'"), to show the PPO
     implementation does learn what a reward asks when the policy can represent it;
3. held-out prompts answered by every policy; the gold win rate over SFT with a clustered
   bootstrap 95% interval, ties counting half, and the "oracle" rate: what a policy that always
   answered perfectly would score against this SFT policy (ties where SFT is already perfect).

Run directories go under a temporary folder (or --out, to reuse finished stages).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training.demo import families  # noqa: E402
from training.demo.crowd import gold_win_rate, make_crowd  # noqa: E402
from training.engine import ppo, reward, sample, sft  # noqa: E402
from training.engine.config import PPOConfig, RewardConfig, SampleConfig, SFTConfig  # noqa: E402


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _answers(model: Path, prompts: list[str], out: Path, temperature: float) -> list[str]:
    cfg = SampleConfig(
        output_dir=str(out), model_path=str(model), k=1, temperature=temperature,
        max_new_tokens=48, checkpoint_every=0,
    )  # fmt: skip
    result = sample.run(cfg, {"prompts": [{"prompt": _messages(p)} for p in prompts]})
    return [s["completion"] for s in sorted(result["samples"], key=lambda s: s["prompt_index"])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "tiny-base"))
    parser.add_argument("--demonstrations", type=int, default=600)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--rankings", type=int, default=600, help="prompts sampled K=4 and ranked")
    parser.add_argument("--ppo-prompts", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--kl-coef", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=16, help="PPO rollouts per step")
    parser.add_argument("--rm-lr", type=float, default=1e-4)
    parser.add_argument(
        "--zero-value-head", action="store_true",
        help="programmatic rewards: start the value head at 0 instead of ppo.py's fresh random "
        "head (whose per-token values, std ~1.3, swamp rewards in [0, 1])",
    )  # fmt: skip
    parser.add_argument(
        "--rewards", default="gold,rm,the", help="which PPO runs: gold judge, reward model, 'The'"
    )
    parser.add_argument("--eval-prompts", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=1.0, help="evaluation sampling")
    parser.add_argument("--out", default=None, help="run folder (reused when it exists)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out or tempfile.mkdtemp(prefix="instructloop-ceiling-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    rng = random.Random(0)
    crowd = make_crowd(6, agreement=0.73, seed=0)
    train = families.sample_prompts(args.demonstrations, seed=0, split="train")
    heldout = families.sample_prompts(args.eval_prompts, seed=1, split="heldout")
    demos = [
        {"prompt": _messages(p), "completion": crowd[i % len(crowd)].write_demonstration(p, rng)}
        for i, p in enumerate(train)
    ]
    sft.run(
        SFTConfig(output_dir=str(out / "sft"), model_path=args.model, max_steps=args.sft_steps,
                  batch_size=16, lr=1e-3, checkpoint_every=0),
        {"demonstrations": demos},
    )  # fmt: skip
    sft_model = out / "sft" / "model"
    print(f"SFT done ({time.monotonic() - t0:.0f} s)", flush=True)

    ranked = train[: args.rankings]
    samples = sample.run(
        SampleConfig(output_dir=str(out / "sft-samples"), model_path=str(sft_model), k=4,
                     temperature=1.0, max_new_tokens=48, checkpoint_every=0),
        {"prompts": [{"prompt": _messages(p)} for p in ranked]},
    )["samples"]  # fmt: skip
    groups: dict[int, list[str]] = defaultdict(list)
    for s in samples:
        groups[s["prompt_index"]].append(s["completion"])
    rankings = []
    for i, completions in groups.items():
        if len(set(completions)) < 2:
            continue
        for labeler in rng.sample(crowd, 2):  # overlap 2, as in the loop
            ranks = [e.rank for e in labeler.rank(ranked[i], completions, rng)]
            rankings.append({"prompt": _messages(ranked[i]), "completions": completions,
                             "ranks": ranks})  # fmt: skip
    rm = reward.run(
        RewardConfig(output_dir=str(out / "rm"), model_path=str(sft_model), epochs=1, lr=args.rm_lr,
                     batch_size=8, checkpoint_every=0),
        {"rankings": rankings, "demonstrations": demos},
    )  # fmt: skip
    print(f"reward model: {len(rankings)} rankings, held-out pair accuracy "
          f"{rm['metrics']['val/pair_accuracy']:.3f} ({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip

    ppo_prompts = [
        {"prompt": _messages(p)}
        for p in families.sample_prompts(args.ppo_prompts, seed=3, split="train")
    ]
    rewards = {
        "gold judge": lambda ps, ts: [
            families.judge(p, t).quality for p, t in zip(ps, ts, strict=True)
        ],
        "reward model": None,
        "starts with 'The'": lambda ps, ts: [float(t.strip().startswith("The")) for t in ts],
    }
    sft_answers = _answers(sft_model, heldout, out / "eval-sft", args.temperature)
    sft_quality = [families.judge(p, a).quality for p, a in zip(heldout, sft_answers, strict=True)]
    zero_value = None
    if args.zero_value_head:
        from training.engine.lm import load_tokenizer
        from training.engine.reward_model import RewardModel

        zero_value = out / "value-zero"
        tokenizer = load_tokenizer(str(sft_model))
        value = RewardModel.from_causal_lm(str(sft_model), tokenizer, torch.device("cpu"))
        torch.nn.init.zeros_(value.head.weight)
        value.save_pretrained(zero_value, tokenizer)
    rows = []
    wanted = set(args.rewards.split(","))
    for i, (name, fn) in enumerate(rewards.items()):
        if ("gold", "rm", "the")[i] not in wanted:
            continue
        t = time.monotonic()
        result = ppo.run(
            PPOConfig(output_dir=str(out / f"ppo-{i}"), policy_path=str(sft_model),
                      reward_model_path=None if fn else str(out / "rm" / "model"),
                      value_model_path=str(zero_value) if fn and zero_value else None,
                      total_episodes=args.episodes, lr=args.lr, value_lr=1e-4,
                      batch_size=args.batch_size,
                      kl_coef=args.kl_coef, max_new_tokens=32, checkpoint_every=0),
            {"prompts": ppo_prompts}, reward_fn=fn,
        )  # fmt: skip
        history = result["history"]
        first = sum(h["reward/score"] for h in history[:16]) / len(history[:16])
        last = sum(h["reward/score"] for h in history[-16:]) / len(history[-16:])
        answers = _answers(out / f"ppo-{i}" / "model", heldout, out / f"eval-ppo-{i}", args.temperature)  # fmt: skip
        quality = [families.judge(p, a).quality for p, a in zip(heldout, answers, strict=True)]
        starts_the = sum(a.strip().startswith("The") for a in answers) / len(answers)
        rows.append((name, first, last, history[-1]["kl/k1"], sum(quality) / len(quality),
                     starts_the, gold_win_rate(heldout, [answers], [sft_answers]), time.monotonic() - t))  # fmt: skip
        print(f"PPO against the {name} done ({rows[-1][-1]:.0f} s)", flush=True)

    perfect = sum(q >= 0.9999 for q in sft_quality) / len(sft_quality)
    print(f"\n# bench/loop_ceiling.py ({len(heldout)} held-out prompts, T={args.temperature}, "
          f"{args.episodes} PPO episodes, batch {args.batch_size}, lr {args.lr}, kl {args.kl_coef}"
          f"{', value head from 0' if args.zero_value_head else ''})")  # fmt: skip
    print(f"SFT: mean gold quality {sum(sft_quality) / len(sft_quality):.3f}, perfect on {perfect:.1%}; "
          f"oracle win rate (a policy always perfect) {(1 - perfect) + perfect / 2:.3f}")  # fmt: skip
    print(f"{'PPO reward':<20} {'train score first→last 16 steps':>32} {'KL':>6} {'quality':>8} "
          f"{'starts The':>10}  win rate over SFT [95% CI]  (W/T/L)")  # fmt: skip
    for name, first, last, kl, q, the, wr, _ in rows:
        print(f"{name:<20} {first:>15.3f} → {last:<14.3f} {kl:>6.2f} {q:>8.3f} {the:>10.1%}  "
              f"{wr.rate:.3f} [{wr.low:.3f}, {wr.high:.3f}]  ({wr.wins}/{wr.ties}/{wr.losses})")  # fmt: skip
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
