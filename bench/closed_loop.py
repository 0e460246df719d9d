"""The whole InstructGPT loop on this machine, from nothing, through the real platform.

    python bench/closed_loop.py [--prompts 1500] [--labelers 6] [--rounds 2] [--reuse-base]

Build the tiny base model → a project with demo prompts → simulated labelers write demonstrations
over the HTTP API → SFT on the worker → the SFT policy samples 8 per prompt into the ranking
queue (the first K=4 distinct make a task) → simulated labelers rank (overlap 2, so agreement is
measured) → round 1: reward model, PPO from SFT, gate, and the PPO and SFT policies sample every
train prompt (2 + 2, at T=1) into mixed, blinded ranking tasks and the held-out prompts into A/B
tasks → simulated labelers rank those → round 2 from the round-1 policy: a reward model on every
ranking so far, PPO, gate, sampling (InstructGPT's iterated collection) → simulated labelers judge
the blind A/B pairs, the last policy against SFT among them. Prints, for each round's policy, the
win rate over SFT (simulated evaluators, and by the gold quality function itself) with 95%
intervals, the reward model's held-out accuracy beside the labelers' agreement ceiling, the
round's final KL (to the policy it started from) and the wall time of every stage.

Needs PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_BROKER_URL); a fresh database is made.

Since session 5 the default is two rounds of 8,192 PPO episodes each (the same PPO budget as one
round of 16,384 before). Through the platform, 2026-12-03, a 2-vCPU AMD EPYC; seeds 0-2 on one
core (taskset -c 1, OMP_NUM_THREADS=1, --reuse-base) with an offline study on the other:

    seed  gold win rate over SFT: round 1 -> round 2      SFT -> round 1 -> round 2 quality  RM acc r1 / r2 / agr.  KL r1, r2  total
    0     0.746 [0.693, 0.799] -> 0.758 [0.705, 0.811]   0.551 -> 0.799 -> 0.814           0.670 / 0.673 / 0.738  1.07, 0.39  754 s
    1     0.702 [0.647, 0.758] -> 0.715 [0.660, 0.767]   0.477 -> 0.696 -> 0.728           0.633 / 0.677 / 0.726  1.54, 0.76  778 s
    2     0.697 [0.643, 0.747] -> 0.727 [0.673, 0.780]   0.588 -> 0.795 -> 0.830           0.659 / 0.694 / 0.728  1.47, 0.52  797 s
    3     0.696 [0.644, 0.745] -> 0.724 [0.672, 0.773]   0.536 -> 0.767 -> 0.833           0.633 / 0.669 / 0.730  1.44, 0.75  791 s *

* from nothing on both cores, no taskset: the base model's build (168 s) included; the whole loop
  takes 13.2 minutes, within the 20 asked.

The second round improves on the first on every seed (+0.012, +0.013, +0.030, +0.028; mean
0.710 -> 0.731), but offline it is level with one round of all 16,384 episodes (bench/loop_offline.py,
4 answers per test prompt; seed 0: 8,192 episodes 0.714, 16,384 in one round 0.738, 8,192 then
--after with 8,192 more 0.734; seed 1: 0.697, 0.714, 0.722). Two rounds are the default because
the bench then runs the loop as the platform is meant to be run, for the same PPO budget, and
shows each round's gain. The 0.75 asked is met on seed 0 only. No better: beta 0.02 in the
second round (offline, seeds 0 and 1: 0.724 and 0.715). A third round (`--rounds 3`, one core
each, --reuse-base; SFT and round 1 differ from the runs above as the crowd races over HTTP):
seed 1 0.736 -> 0.776 [0.724, 0.825] after round 3 (gold quality 0.754 -> 0.792 -> 0.811), seed 2
0.680 -> 0.723 [0.670, 0.777] (0.764 -> 0.852 -> 0.851), in 1,239 s and 1,126 s on one core: over
the 20 minutes from nothing on one core, and still one seed of two. (Those two runs stopped at
printing round 2, which then had no A/B tasks against SFT; since fixed, their figures were read
from the databases they left.)
What bounds it is the tiny policy's knowledge: the misses are wrong facts ("the opposite of sad
is clean", "8 plus 3 is 13", "is 7 bigger than 3? No."), which neither the reward model (from the
same SFT weights) nor PPO can supply. A base model pretrained twice as long (2,600 steps, greedy
quality 0.79 instead of 0.53) makes the SFT baseline stronger, not the win: offline seed 0, 8,192
episodes, 0.620 (W/T/L 177/301/50: mostly ties with an SFT answer already right).

Session 4, one round of 16,384 episodes (`--rounds 1 --ppo-episodes 16384`; reward model lr 3e-4
for 3 epochs, beta 0.05):

    flags beyond those defaults       seed  gold win rate          SFT->PPO quality  RM acc / agr.  KL   total
    (none)                            0     0.735 [0.678, 0.788]   0.547 -> 0.836    0.658 / 0.729  2.1  720 s
    --prompts 3000                    0     0.755 [0.715, 0.795]   0.465 -> 0.840    0.633 / 0.735  1.5  857 s
    --prompts 3000 --sft-steps 300    0     0.730 [0.692, 0.767]   0.549 -> 0.874    0.678 / 0.730  1.4  865 s
    --prompts 3000 --sft-steps 300    1     0.713 [0.670, 0.755]   0.576 -> 0.900    0.627 / 0.734  1.7  906 s

The 0.755 is not a pass: with 3,000 prompts 150 SFT steps see less than one epoch of the 2,700
demonstrations, so its SFT baseline is weaker (0.465); with the SFT steps scaled to the same ~1.8
epochs (300), the baseline is back at 0.549 and the win rate at 0.730 although the PPO policy is
better (0.874). (A one-round run on this session's VM, seed 0: 0.682 [0.621, 0.742].)

Session 3's defaults (reward lr 1e-3, 1 epoch, beta 0.2), pinned to one core
(taskset -c 1, OMP_NUM_THREADS=1; --seed picks the prompts and the crowd, and SFT differs run to
run as the crowd's demonstrations race over HTTP):

    PPO episodes  seed  gold win rate          simulated  RM acc / agreement  KL    total (round)
    16,384        0     0.701 [0.644, 0.758]   0.669      0.572 / 0.738       2.0   537 s (455 s)
    16,384        1     0.715 [0.663, 0.767]   0.689      0.611 / 0.744       2.3   679 s (448 s)
    16,384        2     0.723 [0.670, 0.777]   0.695      0.627 / 0.723       1.8   606 s (509 s)
     8,192        1     0.684 [0.632, 0.736]   0.609      0.611 / 0.729       1.2   359 s (276 s)
     8,192        2     0.753 [0.703, 0.803]   0.698      0.627 / 0.724       1.3   397 s (302 s)
     8,192        0     0.670 [0.610, 0.727]   0.648      0.632 / 0.725       1.0   514 s, 2 shared cores

The 8,192-episode run of seed 2 drew a weak SFT policy (mean gold quality 0.46 on the held-out
prompts; 0.49-0.54 in the others, 0.54 in the 16,384-episode run of the same seed), so its 0.753
is the draw, not the setting. What carries the win: 8 SFT samples per prompt with the first 4 distinct
ranked (~1,000 tasks instead of ~130), PPO batch 64, beta 0.2 and PPO-ptx 1.0. Without ptx the
policy reward-hacks this reward model (gold 0.375 at beta 0.2; KL 12 at beta 0.05). Most of the
gain is ptx continuing SFT on the demonstrations: offline (bench/loop_offline.py, seed 0's data,
4 answers per held-out prompt) zero reward with the same PPO-ptx reaches 0.695 at 16,384 episodes
where the reward model reaches 0.721 (0.660 at 8,192); the reward model's score of the policy's
samples hardly rises during PPO (its scores correlate 0.21 with the gold quality). Even the gold
judge as the reward (8,192 episodes, with ptx) reaches only 0.702 there: the tiny policy is a
bound too (compare stays near a coin flip). No better: 24,576 episodes (0.709), K=8 rankings
(0.718), a zero-initialised value head (8,192 episodes: 0.684 vs 0.660), lr 2e-4 with beta 0.1
and ptx batch 16 (0.689, entropy collapsed to 0.09). bench/loop_ceiling.py: PPO without ptx
against the gold judge itself reaches ~0.63-0.68.

Offline study, 2026-11-29 (bench/loop_offline.py, 16,384 episodes, PPO-ptx 1.0, one AMD EPYC
core; gold win rate, first answer per test prompt / all 4 answers with the 95% interval of the
latter; seed 0 has 132 test prompts):

    reward                                          beta   first  all 4                 KL
    gold judge, value head at 0 (seed 0)            0.02   0.761  0.756 [0.718, 0.792]  2.2
    gold judge, value head at 0 (seed 1)            0.02   0.730  0.743 [0.704, 0.780]  2.1
    RM lr 1e-3, 1 epoch (val pair acc 0.594)        0.05   0.723  0.723 [0.683, 0.761]  1.9
    RM lr 3e-4, 3 epochs (val pair acc 0.691)       0.05   0.708  0.721 [0.684, 0.758]  2.1
    RM lr 3e-4, 3 epochs (val pair acc 0.691)       0.02   0.701  0.713 [0.669, 0.756]  1.9
    RM lr 1e-3, 1 epoch (seed 1, val acc 0.624)     0.05   0.706  0.712 [0.679, 0.747]  1.9
    RM lr 1e-3, PPO trained at T=0.7 (seed 0)     0.05   0.723  0.721 [0.679, 0.759]  2.0
    gold judge, PPO trained at T=0.7 (seed 0)     0.02   0.705  0.720 [0.676, 0.759]  1.9

Even a perfect reward model, with the KL penalty no longer drowning it (beta 0.02), reaches 0.75
on one seed of two (seed 1, 163 test prompts: 0.730 / 0.743, where the RM gets 0.712): its
answers' mean gold quality is ~0.82-0.89 and ties count half (an oracle wins ~0.84). On seed 0 every reward-model run lands at
0.70-0.72, whatever beta (0.02, 0.05; 0.2 gave 0.721 before) and even with a clearly better reward
model (bench/rm_probe.py: lr 3e-4 for 3 epochs raises the held-out pair accuracy from 0.594 to
0.691 and the within-prompt agreement with the gold judge on the SFT answers from 0.62 to 0.72,
but not the win rate). So 0.75 within the loop's budget would need a reward model close to the
gold judge on the policy's own samples, and even that is not reliably enough; better accuracy on
SFT samples alone does not move PPO. The defaults stay as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STAGES: list[tuple[str, float]] = []


def stage(name: str):
    class _Timer:
        def __enter__(self):
            self.t0 = time.monotonic()
            print(f"--> {name}", flush=True)

        def __exit__(self, *exc):
            STAGES.append((name, time.monotonic() - self.t0))
            print(f"    {name}: {STAGES[-1][1]:.1f} s", flush=True)

    return _Timer()


def _reset_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    conn = psycopg2.connect(parsed._replace(path="/postgres").geturl())
    conn.autocommit = True
    with conn.cursor() as cur:
        name = parsed.path.lstrip("/")
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def _wait_run(run_id: int, timeout: float = 1800) -> object:
    from training.models import RunStatus, TrainingRun

    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if run.step != last:
            print(
                f"    run {run.pk} {run.kind}: {run.status} {run.step}/{run.total_steps}",
                flush=True,
            )
            last = run.step
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            if run.status != RunStatus.SUCCEEDED:
                raise SystemExit(f"run {run.pk} {run.status}: {run.error[-2000:]}")
            return run
        time.sleep(2)
    raise SystemExit(f"run {run_id} did not finish in {timeout} s")


def _wait_round(round_id: int, timeout: float = 3600) -> object:
    from training.models import Round, RoundStatus

    deadline = time.monotonic() + timeout
    stage_seen = None
    while time.monotonic() < deadline:
        round_ = Round.objects.get(pk=round_id)
        if round_.stage != stage_seen:
            print(f"    round {round_.number}: {round_.stage}", flush=True)
            stage_seen = round_.stage
        if round_.status != RoundStatus.RUNNING:
            if round_.status != RoundStatus.SUCCEEDED:
                raise SystemExit(f"round failed: {round_.error} gate={round_.gate}")
            return round_
        time.sleep(2)
    raise SystemExit("round did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=1500)
    parser.add_argument("--labelers", type=int, default=6)
    parser.add_argument("--agreement", type=float, default=0.73)
    parser.add_argument("--k", type=int, default=4, help="outputs per ranking task (2..9)")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--reward-epochs", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=2,
        help="rounds of reward model + PPO; each round's policy samples train prompts into the "
        "ranking queue, the crowd ranks them, and the next round starts from that policy",
    )  # fmt: skip
    parser.add_argument("--ppo-episodes", type=int, default=8192, help="per round")
    parser.add_argument(
        "--round-rank-prompts", type=int, default=0,
        help="train prompts each round (but the last) samples for ranking (0 = all)",
    )  # fmt: skip
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--ppo-lr", type=float, default=1e-4)
    parser.add_argument("--reward-lr", type=float, default=3e-4)
    parser.add_argument("--ppo-batch", type=int, default=64, help="rollouts per PPO step")
    parser.add_argument("--ppo-ptx", type=float, default=1.0, help="PPO-ptx gamma (0 = off)")
    parser.add_argument(
        "--rank-samples", type=int, default=8,
        help="SFT samples per prompt for the ranking queue; the first K distinct make a task",
    )  # fmt: skip
    parser.add_argument(
        "--rank-temperature", type=float, default=1.0, help="SFT sampling for the ranking queue"
    )
    parser.add_argument(
        "--rank-prompts", type=int, default=0, help="train prompts sampled for ranking (0 = all)"
    )
    parser.add_argument(
        "--eval-temperature", type=float, default=0.7,
        help="sampling temperature of BOTH policies for the blind A/B (and the new ranking samples)",
    )  # fmt: skip
    parser.add_argument("--max-kl", type=float, default=8.0, help="the round's gate")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--reuse-base", action="store_true", help="reuse var/models/tiny-base")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    t_start = time.monotonic()

    var_dir = Path(tempfile.mkdtemp(prefix="instructloop-loop-"))
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/il_loop")
    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
    os.environ.update(
        DATABASE_URL=db_url, CELERY_BROKER_URL=broker, INSTRUCTLOOP_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="instructloop.settings", DEBUG="0", LOG_LEVEL="WARNING",
    )  # fmt: skip
    _reset_database(db_url)

    with stage("build the tiny base model"):
        from training.demo.base_model import ensure_tiny_model

        target = var_dir / "models" / "tiny-base"
        cached = ROOT / "var" / "models" / "tiny-base"
        if args.reuse_base and cached.is_dir():
            import shutil

            shutil.copytree(cached, target)
        else:
            ensure_tiny_model(target)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from labeling import imports, rounds, runs, selectors, services, stats
    from labeling.models import Comparison, ModelVersion, Prompt, Split
    from training.demo import families
    from training.demo.crowd import make_crowd
    from training.demo.http_crowd import run_crowd
    from training.management.commands.simulate_labelers import (
        calibration_rankings,
        simulated_tokens,
    )

    call_command("migrate", verbosity=0)
    admin = get_user_model().objects.create_user("loop-admin", password=None, is_staff=True)
    project = services.project_create(
        name="Closed loop", slug="loop", creator=admin, k=args.k, overlap=2, demo_overlap=1,
        guidelines="Answer exactly what is asked, briefly, then stop.",
    )  # fmt: skip
    lines = "\n".join(
        json.dumps({"prompt": p}) for p in families.sample_prompts(args.prompts, seed=args.seed)
    )
    rows = imports.parse_prompts("prompts.jsonl", lines.encode(), max_bytes=50_000_000)
    services.prompts_import(project=project, rows=rows, source="bench")
    base = ModelVersion.objects.create(
        project=project, name="tiny-base", kind="base", path="tiny-base"
    )
    tokens = simulated_tokens(project=project, n=args.labelers)
    splits = {s: Prompt.objects.filter(project=project, split=s).count() for s in Split.values}
    print(f"    prompts by split: {splits}")

    env = dict(os.environ)
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "instructloop.wsgi:application", "--bind",
         f"127.0.0.1:{args.port}", "--workers", "2", "--worker-class", "gthread", "--threads", "4",
         "--log-level", "warning"], cwd=ROOT, env=env,
    )  # fmt: skip
    worker_log = open(var_dir / "worker.log", "wb")  # noqa: SIM115 - closed at exit
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "instructloop", "worker", "-B", "-Q", "cpu,gpu",
         "--pool=solo", "--loglevel=WARNING", "-s", str(var_dir / "beat-schedule")],
        cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(3)

        def crowd(kinds: list[str], seed: int):
            # As `manage.py simulate_labelers` does: the noise is calibrated on the project's own
            # ranking tasks (real samples are closer in quality than synthetic ones).
            labelers = make_crowd(
                len(tokens), agreement=args.agreement, seed=seed,
                rankings=calibration_rankings(project=project) or None,
            )  # fmt: skip
            summary = run_crowd(base_url, tokens, project.pk, kinds=kinds, crowd=labelers)
            for line in summary.lines():
                print("    " + line)
            connection.close()

        with stage("simulated labelers write demonstrations"):
            crowd(["demonstration"], args.seed)

        with stage("SFT"):
            run = runs.run_start(
                project=project, kind="sft", created_by=admin, base_model=base,
                config={"max_steps": args.sft_steps, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 50},
            )  # fmt: skip
            run = _wait_run(run.pk)
            sft = ModelVersion.objects.get(training_run=run)

        with stage(
            f"SFT policy samples {args.rank_samples} per train prompt into the ranking queue"
        ):
            run = runs.run_start(
                project=project, kind="sample", created_by=admin, base_model=sft,
                config={"k": args.rank_samples, "temperature": args.rank_temperature, "max_new_tokens": 48,
                        "max_prompts": args.rank_prompts or None},
            )  # fmt: skip
            _wait_run(run.pk)

        with stage("simulated labelers rank"):
            crowd(["ranking"], args.seed + 1)

        finished: list = []  # the rounds, in order; each starts from the previous one's policy
        train_prompts = Prompt.objects.filter(project=project, split=Split.TRAIN).count()
        for number in range(1, args.rounds + 1):
            last = number == args.rounds
            with stage(f"round {number}: reward model, PPO, gate, sampling"):
                round_ = rounds.round_start(
                    project=project, policy=finished[-1].new_policy if finished else sft,
                    created_by=admin,
                    config={
                        "reward": {"epochs": args.reward_epochs, "batch_size": 8, "lr": args.reward_lr},
                        "ppo": {"total_episodes": args.ppo_episodes, "kl_coef": args.kl_coef,
                                "lr": args.ppo_lr, "value_lr": 1e-4, "max_new_tokens": 32,
                                "batch_size": args.ppo_batch, "ptx_coef": args.ppo_ptx},
                        "gate": {"max_kl": args.max_kl},
                        "sample": {"temperature": args.eval_temperature, "max_new_tokens": 48},
                        "rank_sample": {"temperature": args.rank_temperature},
                        "max_prompts": 32 if last else args.round_rank_prompts or train_prompts,
                        "eval_prompts": 200,
                    },
                )  # fmt: skip
                round_ = _wait_round(round_.pk)
            finished.append(round_)
            if not last:
                with stage(f"simulated labelers rank round {number}'s samples"):
                    crowd(["ranking"], args.seed + 10 + number)
        for done in finished[1:]:  # a later round's A/B tasks are against its start policy
            services.evaluation_tasks_create(project=project, model_a=done.new_policy, model_b=sft)

        with stage("simulated labelers judge blind A/B pairs"):
            crowd(["comparison"], args.seed + 2)
    finally:
        for proc in (web, worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    from labeling.models import Ranking, Task
    from training.models import RunMetric

    comparisons = selectors.comparison_records(project=project)
    gold = {}  # one gold judgement per (prompt, pair of models): the A/B pairs the crowd saw
    for c in Comparison.objects.filter(task__project=project).select_related(
        "task__prompt", "a_completion__model_version", "b_completion__model_version"
    ):
        qa = families.judge(c.task.prompt.text, c.a_completion.text).quality
        qb = families.judge(c.task.prompt.text, c.b_completion.text).quality
        winner = "tie" if abs(qa - qb) < 1e-9 else ("a" if qa > qb else "b")
        a, b = c.a_completion.model_version.name, c.b_completion.model_version.name
        gold[(c.task.prompt_id, frozenset((a, b)))] = stats.PairVerdict(
            model_a=a, model_b=b, winner=winner, len_a=len(c.a_completion.text),
            len_b=len(c.b_completion.text), prompt_id=c.task.prompt_id, labeler_id=0,
        )  # fmt: skip

    def quality(version: ModelVersion) -> float:
        texts = version.completions.filter(prompt__split=Split.TEST).select_related("prompt")
        scores = [families.judge(c.prompt.text, c.text).quality for c in texts]
        return sum(scores) / max(len(scores), 1)

    agreement = selectors.labeler_agreement(project=project)
    rm_accuracy = {r["model"]: r["val_pair_accuracy"] for r in selectors.reward_model_accuracies(project=project)}  # fmt: skip
    ranked_tasks = Task.objects.filter(project=project, kind="ranking", rankings__isnull=False)
    print("\n# bench/closed_loop.py results")
    print(f"ranking data: {ranked_tasks.distinct().count()} ranked tasks, "
          f"{Ranking.objects.filter(task__project=project).count()} rankings; A/B samples of both "
          f"policies at temperature {args.eval_temperature}; labelers' pairwise agreement "
          f"(the reward model's ceiling): {agreement['overall']:.3f} over {agreement['comparisons']} pairs")  # fmt: skip
    print(f"mean gold quality on held-out prompts: SFT {quality(sft):.3f}")
    for done in finished:
        ppo, rm = done.new_policy, ModelVersion.objects.get(training_run=done.reward_run)
        kl = RunMetric.objects.filter(run=done.ppo_run, name="kl/k1").order_by("-step").first()
        acc = rm_accuracy.get(rm.name)
        print(f"round {done.number} ({done.policy.name} -> {ppo.name}): reward model held-out pair "
              f"accuracy {acc if acc is None else f'{acc:.3f}'}; final KL to {done.policy.name} "
              f"per response (k1) {kl.value if kl else float('nan'):.3f}; mean gold quality "
              f"{quality(ppo):.3f}; gate {json.dumps(done.gate.get('checks'))}")  # fmt: skip
        simulated = stats.win_rate(comparisons, model=ppo.name, baseline=sft.name, n_boot=2000)
        gold_rate = stats.win_rate(gold.values(), model=ppo.name, baseline=sft.name, n_boot=2000)
        print(f"  {ppo.name} vs SFT win rate, simulated blind evaluators: {simulated.rate:.3f} "
              f"[{simulated.low:.3f}, {simulated.high:.3f}] over {simulated.n} judgements "
              f"(wins {simulated.wins}, ties {simulated.ties}, losses {simulated.losses})")  # fmt: skip
        print(f"  {ppo.name} vs SFT win rate, gold quality function:      {gold_rate.rate:.3f} "
              f"[{gold_rate.low:.3f}, {gold_rate.high:.3f}] over {gold_rate.n} held-out prompts")  # fmt: skip
    for name, seconds in STAGES:
        print(f"  {name:<62} {seconds:7.1f} s")
    print(f"  {'total':<62} {time.monotonic() - t_start:7.1f} s")


if __name__ == "__main__":
    main()
