"""How well do reward-model variants track the gold judge? Cheap screening before a PPO run.

    python bench/rm_probe.py --out DIR [--seed 0] VARIANT [VARIANT ...]

A VARIANT is comma-separated key=value settings of the reward model: lr, epochs, init (sft or
base), k, rank_samples, batch. Reuses bench/loop_offline.py's run folder DIR (its SFT model,
its ranking samples and, for scoring, the SFT policy's evaluation answers eval-sft-k4 on the test
prompts), rebuilds the same rankings, trains each variant under DIR/probe-<variant> and prints its
held-out pair accuracy against the labelers and, on the test prompts' SFT answers, its Pearson
correlation with the gold quality and its pair accuracy against the gold judge within a prompt
(untied pairs), the thing PPO uses.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from functools import cache, partial
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.loop_offline import _messages, demo_data, ranking_data  # noqa: E402
from training.demo import families  # noqa: E402
from training.engine import reward, sample  # noqa: E402
from training.engine.config import RewardConfig, SampleConfig  # noqa: E402
from training.engine.data import chunks, collate_sft, encode_demonstrations  # noqa: E402
from training.engine.lm import load_tokenizer  # noqa: E402
from training.engine.precision import autocast, to_device  # noqa: E402
from training.engine.reward_model import RewardModel  # noqa: E402


def _pearson(x: list[float], y: list[float]) -> float:
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    tx, ty = tx - tx.mean(), ty - ty.mean()
    return float((tx * ty).sum() / (tx.norm() * ty.norm()).clamp_min(1e-12))


@torch.inference_mode()
def _scores(model_dir: Path, prompts: list[str], texts: list[str]) -> list[float]:
    tokenizer = load_tokenizer(str(model_dir))
    model = RewardModel.from_pretrained(str(model_dir), tokenizer, torch.device("cpu")).eval()
    records = [
        {"prompt": _messages(p), "completion": t} for p, t in zip(prompts, texts, strict=True)
    ]
    encoded = encode_demonstrations(tokenizer, records, 512)
    amp = partial(autocast, torch.device("cpu"), torch.float32)
    out: list[float] = []
    for group in chunks(encoded, 32):
        batch = to_device(collate_sft(group, tokenizer.pad_token_id), torch.device("cpu"))
        with amp():
            out.extend(model(batch["input_ids"], batch["attention_mask"]).tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=1500)
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "tiny-base"))
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    out = Path(args.out)
    sft_model = out / "sft" / "model"

    train, test, demos = demo_data(args.prompts, args.seed)
    eval_k = 4
    answers = sample.run(
        SampleConfig(output_dir=str(out / f"eval-sft-k{eval_k}"), model_path=str(sft_model),
                     k=eval_k, temperature=0.7, max_new_tokens=48, checkpoint_every=0),
        {"prompts": [{"prompt": _messages(p)} for p in test]},
    )["samples"]  # fmt: skip
    probe_prompts = [test[s["prompt_index"]] for s in answers]
    probe_texts = [s["completion"] for s in answers]
    gold = [families.judge(p, t).quality for p, t in zip(probe_prompts, probe_texts, strict=True)]

    rankings_for = cache(
        lambda k, rank_samples: ranking_data(out, sft_model, train, k, rank_samples, args.seed)
    )
    for variant in args.variants:
        settings = dict(item.split("=") for item in variant.split(",") if item)
        lr = float(settings.get("lr", 1e-3))
        epochs = int(settings.get("epochs", 1))
        k = int(settings.get("k", 4))
        rank_samples = int(settings.get("rank_samples", 8))
        batch = int(settings.get("batch", 8))
        init = settings.get("init", "sft")
        _, rankings = rankings_for(k, rank_samples)
        name = "probe-" + variant.replace("=", "").replace(",", "-")
        result = reward.run(
            RewardConfig(output_dir=str(out / name),
                         model_path=str(sft_model) if init == "sft" else args.model,
                         epochs=epochs, lr=lr, batch_size=batch, checkpoint_every=0),
            {"rankings": rankings, "demonstrations": demos},
        )  # fmt: skip
        scores = _scores(out / name / "model", probe_prompts, probe_texts)
        by_prompt: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(probe_prompts):
            by_prompt[p].append(i)
        right = pairs = 0
        for idx in by_prompt.values():
            for a, b in combinations(idx, 2):
                if abs(gold[a] - gold[b]) > 1e-9 and scores[a] != scores[b]:
                    pairs += 1
                    right += (gold[a] > gold[b]) == (scores[a] > scores[b])
        print(
            f"{variant}: {len(rankings)} rankings, val pair acc "
            f"{result['metrics']['val/pair_accuracy']:.3f}; on {len(gold)} test answers: "
            f"pearson with gold {_pearson(scores, gold):.3f}, within-prompt gold pair acc "
            f"{right / max(pairs, 1):.3f} over {pairs} pairs",
            flush=True,
        )


if __name__ == "__main__":
    main()
