"""A run that asks for two processes: the launcher starts two ranks (FSDP2 over gloo on CPU),
rank 0 reports progress and writes the model, and a rank killed mid-run fails the attempt at
once (the other rank stopped with it) and the retry resumes from the sharded checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from django.utils import timezone

from labeling.errors import Invalid
from tests.factories import ModelVersionFactory, submitted_demonstration
from training import launcher, runs, storage
from training.models import RunMetric, TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SFT = {"batch_size": 4, "processes": 2, "val_fraction": 0.0, "lr": 1e-3}


@pytest.fixture
def toy(project, personas, settings, tmp_path):
    from tests.training.engine.toy_model import build_toy_model

    settings.MODEL_ROOT, settings.RUN_ROOT = tmp_path / "models", tmp_path / "runs"
    settings.TRAINING_LAUNCHER = "subprocess"
    build_toy_model(settings.MODEL_ROOT / "toy", dropout=0.0)
    for i in range(8):
        submitted_demonstration(project, personas.alice, f"Bread and tea {i}.", timezone.now())
    return ModelVersionFactory(project=project, name="toy", kind="base", path="toy")


def start(project, personas, toy, **config) -> TrainingRun:
    return runs.run_start(
        project=project, kind="sft", config={**SFT, **config}, created_by=personas.admin,
        base_model=toy,
    )  # fmt: skip


def rank_pids() -> dict[int, int]:
    """This process's engine children, by rank (rank 0 is the one given --progress-fd)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"training.engine" in cmdline:
            found[0 if b"--progress-fd" in cmdline else 1] = int(stat.parent.name)
    return found


def test_a_run_asking_for_two_processes_trains_in_two_and_registers_one_model(
    project, personas, toy
):
    run = start(project, personas, toy, max_steps=4)
    seen: list[dict[int, int]] = []

    def watch() -> None:  # until both ranks have been seen at once
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen and len(seen[-1]) == 2):
            seen.append(rank_pids())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcome = launcher.execute(run_id=run.pk, worker="w")
    watcher.join()
    run.refresh_from_db()
    assert outcome == "succeeded", run.error
    assert run.status == "succeeded" and (run.step, run.total_steps) == (4, 4)
    assert seen and set(seen[-1]) == {0, 1}, seen
    losses = RunMetric.objects.filter(run=run, name="train/loss").order_by("step")
    assert list(losses.values_list("step", flat=True)) == [1, 2, 3, 4]  # rank 0's, once each
    assert run.model_version is not None
    run_dir = storage.run_dir(run)
    assert (Path(storage.model_path(run.model_version)) / "model.safetensors").is_file()
    assert not list(run_dir.glob("failure*.json"))


def test_a_killed_rank_fails_the_attempt_at_once_and_the_retry_resumes(project, personas, toy):
    # Rank 1 dies right after the first checkpoint (step 2); the steps after it are the
    # killer's margin, and all of them are trained again by the retry.
    run = start(project, personas, toy, max_steps=60, checkpoint_every=2)
    killed: list[int] = []
    survivors: list[int] = []

    checkpoints = storage.run_dir(run) / "checkpoints"

    def kill_rank_1_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = rank_pids()
            if any(checkpoints.glob("step-*/state.json")) and 1 in pids:
                os.kill(pids[1], signal.SIGKILL)
                killed.append(pids[1])
                survivors.append(pids.get(0, 0))
            time.sleep(0.1)

    killer = threading.Thread(target=kill_rank_1_after_a_checkpoint)
    started = time.monotonic()
    killer.start()
    assert launcher.execute(run_id=run.pk, worker="w") == "failed"
    took = time.monotonic() - started
    killer.join()
    run.refresh_from_db()
    assert killed, "rank 1 was never seen"
    assert run.status == "queued" and "Killed by SIGKILL" in run.error, run.error
    assert took < 120  # not a hang: rank 0 was stopped with it
    assert not Path(f"/proc/{survivors[0]}/stat").exists() or _is_zombie(survivors[0])

    assert launcher.execute(run_id=run.pk, worker="w") == "succeeded"
    run.refresh_from_db()
    starts = RunMetric.objects.filter(run=run, name="run/started_at_step").order_by("step")
    assert list(starts.values_list("value", flat=True))[-1] >= 2  # resumed from a checkpoint


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_the_in_process_launcher_refuses_a_run_asking_for_two_processes(
    project, personas, toy, settings
):
    settings.TRAINING_LAUNCHER = "inprocess"
    run = start(project, personas, toy, max_steps=1)
    job = launcher.job_for(run)
    with pytest.raises(Invalid, match="INSTRUCTLOOP_LAUNCHER=subprocess"):
        launcher.run_in_process(job, beat=None)  # type: ignore[arg-type]


def test_a_cancel_stops_every_rank(project, personas, toy):
    run = start(project, personas, toy, max_steps=400, checkpoint_every=0)
    seen: list[dict[int, int]] = []

    def cancel_once_both_ranks_train() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen.append(rank_pids())
            if len(seen[-1]) == 2 and TrainingRun.objects.get(pk=run.pk).step >= 1:
                TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
                return
            time.sleep(0.1)

    canceller = threading.Thread(target=cancel_once_both_ranks_train)
    canceller.start()
    assert launcher.execute(run_id=run.pk, worker="w") == "cancelled"
    canceller.join()
    assert len(seen[-1]) == 2, seen[-1]
    assert rank_pids() == {}  # both reaped: none left training
    for pid in seen[-1].values():
        assert not Path(f"/proc/{pid}").exists()
    run.refresh_from_db()
    assert run.status == "cancelled" and run.step < 400


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        ("sft", {"batch_size": 4}, 2),
        ("sft", {"batch_size": 4, "lora_rank": 4}, 1),  # LoRA trains in one process
        ("ppo", {"batch_size": 6, "mini_batch_size": 3}, 1),  # a minibatch 2 cannot split
        ("ppo", {"batch_size": 8, "mini_batch_size": 4}, 2),
        ("ppo", {"batch_size": 8, "mini_batch_size": 4, "processes": 1}, 1),  # the run's word
        ("sample", {}, 1),  # sampling runs in one process
    ],
)
def test_a_worker_set_to_two_processes_uses_them_where_the_run_can(
    settings, tmp_path, kind, config, expected
):
    """INSTRUCTLOOP_TRAINING_PROCESSES is the worker's default, not an order: a run whose config
    cannot train in that many (and names no number itself) trains in one."""
    settings.TRAINING_PROCESSES = 2
    paths = {"sft": {"model_path": "m"}, "ppo": {"policy_path": "m", "reward_model_path": "r"},
             "sample": {"model_path": "m"}}[kind]  # fmt: skip
    job = launcher.Job(kind, {"output_dir": "o", **paths, **config}, {}, tmp_path)
    assert launcher.processes_for(job) == expected
