"""Training jobs end to end on a real Celery worker, broker and database (no mocks).

A run launched while the broker is down → the page answers, the run waits queued with the reason
→ the worker (when the broker answers) gets it sent again and runs it. A killed worker's message
comes back from Redis after the (short, here) visibility timeout.

Launch from the browser → the worker runs SFT on the tiny model → exactly one model version, with
the engine in the worker's process or in a child process it supervises (training/launcher.py).
SIGKILL the worker mid-run → its lease lapses → a new worker resumes from the last checkpoint.
Cancel a run whose engine is a child process → the child is stopped, the worker stays up.
An engine that crashes on a corrupt model → the run fails with the reason, nothing registered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from labeling.models import ModelVersion
from tests.factories import ModelVersionFactory, submitted_demonstration
from tests.training.engine.toy_model import build_toy_model
from tests.worker import database_url, purge_queues, start_worker, wait_until
from training import storage
from training.models import RunMetric, RunStatus, TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.slow]


@pytest.fixture
def tiny_base(project, tmp_path):
    """A random 2-layer GPT-2 registered as the project's base model (under MODEL_ROOT)."""
    name = f"test-tiny-{uuid.uuid4().hex[:8]}"
    target = settings.MODEL_ROOT / name
    build_toy_model(tmp_path / "tiny")
    shutil.copytree(tmp_path / "tiny", target)
    yield ModelVersionFactory(project=project, name=name, kind="base", path=name)
    shutil.rmtree(target, ignore_errors=True)


@pytest.fixture
def worker_env(transactional_db):
    purge_queues()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict))
    env.pop("TEST_DATABASE_NAME", None)
    env["INSTRUCTLOOP_TRAINING_LEASE_SECONDS"] = "3"
    return env


def _launch(project, admin, base, **config) -> TrainingRun:
    client = Client()
    client.force_login(admin)
    response = client.post(
        f"/p/{project.slug}/runs/",
        {"kind": "sft", "base_model": base.pk, "confirm": "on", **config},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return TrainingRun.objects.latest("pk")


def _finished(run_id: int) -> TrainingRun | None:
    run = TrainingRun.objects.get(pk=run_id)
    return (
        run if run.status in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED} else None
    )


def _kill_the_worker_mid_run(
    project, personas, tiny_base, worker_env, tmp_path, now, *, max_steps: int
) -> tuple[TrainingRun, int]:
    """SFT checkpointing every 10 steps, its worker SIGKILLed past step 25 (no warm shutdown, no
    ack: the lease just stops being renewed). Returns the run and the step it was killed at."""
    for i in range(16):
        submitted_demonstration(project, personas.alice, f"A small bird eats some bread {i}.", now)
    worker = start_worker(env=worker_env, log_path=tmp_path / "first.log")
    run = _launch(
        project, personas.admin, tiny_base, max_steps=max_steps, batch_size=4, checkpoint_every=10
    )
    try:
        wait_until(
            lambda: TrainingRun.objects.get(pk=run.pk).step >= 25, timeout=180, interval=0.05
        )
    finally:
        worker.process.kill()
        worker.process.wait()
    return run, TrainingRun.objects.get(pk=run.pk).step


@pytest.mark.parametrize("launcher", ["inprocess", "subprocess"])
def test_an_sft_job_launched_from_the_browser_runs_on_the_worker_and_registers_one_model_version(
    project, personas, tiny_base, worker_env, tmp_path, now, launcher
):
    for i in range(12):
        submitted_demonstration(project, personas.alice, f"The cat likes a banana number {i}.", now)
    worker_env["INSTRUCTLOOP_LAUNCHER"] = launcher
    worker = start_worker(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        run = _launch(
            project, personas.admin, tiny_base, max_steps=6, batch_size=4, checkpoint_every=2
        )
        run = wait_until(lambda: _finished(run.pk), timeout=180)
    finally:
        worker.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error + worker.log()[-3000:]
    version = ModelVersion.objects.get(training_run=run)
    assert version.kind == "sft" and version.parent_id == tiny_base.pk
    assert (Path(settings.MODEL_ROOT) / version.path / "model.safetensors").is_file()
    assert not list((Path(settings.MODEL_ROOT) / version.path).glob("*.bin"))
    assert run.step == run.total_steps == 6
    assert RunMetric.objects.filter(run=run, name="train/loss").count() == 6
    shutil.rmtree(Path(settings.MODEL_ROOT) / version.path, ignore_errors=True)
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)


def test_a_worker_killed_mid_job_resumes_from_its_checkpoint_and_registers_one_model_version(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    run, killed_at = _kill_the_worker_mid_run(
        project, personas, tiny_base, worker_env, tmp_path, now, max_steps=300
    )
    assert killed_at < 300, "the job finished before it could be killed; make it longer"
    # The lease (3 s here) lapses; the next worker's start-up requeues the run.
    wait_until(
        lambda: not TrainingRun.objects.filter(pk=run.pk, lease_expires_at__gt=_now()).exists(),
        timeout=30,
    )
    second = start_worker(env=worker_env, log_path=tmp_path / "second.log")
    try:
        run = wait_until(lambda: _finished(run.pk), timeout=240)
    finally:
        second.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error + second.log()[-3000:]
    assert run.attempt == 2
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    started = dict(
        RunMetric.objects.filter(run=run, name="run/started_at_step").values_list("step", "value")
    )
    resumed_from = max(started.values())
    # Checkpoints every 10 steps: the second attempt starts at the last one before the kill.
    assert resumed_from >= 10 and killed_at - resumed_from <= 10 + 1, (killed_at, started)
    shutil.rmtree(Path(settings.MODEL_ROOT) / storage.run_key(run), ignore_errors=True)
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)


def test_a_failed_run_resumed_over_the_api_continues_from_its_last_checkpoint(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    """The worker is killed mid-run and the run has no attempt left, so the next worker gives it
    up (failed, "Gave up after 1 attempts"); an admin resumes it and it finishes from the last
    checkpoint, not from step 0."""
    from tests.factories import api_client

    run, killed_at = _kill_the_worker_mid_run(
        project, personas, tiny_base, worker_env, tmp_path, now, max_steps=200
    )
    TrainingRun.objects.filter(pk=run.pk).update(max_attempts=1)  # its last attempt was lost
    wait_until(
        lambda: not TrainingRun.objects.filter(pk=run.pk, lease_expires_at__gt=_now()).exists(),
        timeout=30,
    )
    second = start_worker(env=worker_env, log_path=tmp_path / "second.log")
    try:
        failed = wait_until(lambda: _finished(run.pk), timeout=60)
        assert failed.status == RunStatus.FAILED and "Gave up after 1" in failed.error
        admin = api_client(personas.admin)
        url = f"/api/v1/projects/{project.pk}/runs/{run.pk}/"
        resumed = admin.post(url + "resume/")
        assert resumed.status_code == 202, resumed.content
        assert resumed.json()["status"] == "queued"
        assert resumed.json()["error"].startswith("Resumed by ada_admin at ")
        run = wait_until(lambda: _finished(run.pk), timeout=240)
    finally:
        second.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error + second.log()[-3000:]
    assert run.attempt == 2 and run.error == ""  # a success clears the last attempt's error
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    started = dict(
        RunMetric.objects.filter(run=run, name="run/started_at_step").values_list("step", "value")
    )
    resumed_from = max(started.values())
    assert resumed_from >= 10 and killed_at - resumed_from <= 10 + 1, (killed_at, started)
    again = admin.post(url + "resume/")
    assert again.status_code == 409 and "succeeded" in again.json()["detail"]
    shutil.rmtree(Path(settings.MODEL_ROOT) / storage.run_key(run), ignore_errors=True)
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)


def _now():
    from django.utils import timezone

    return timezone.now()


def _engine_children() -> list[str]:
    """Command lines of running `python -m training.engine` processes."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"training.engine" in cmdline and b"--run-dir" in cmdline:
            found.append(b" ".join(cmdline).decode(errors="replace"))
    return found


def test_cancelling_a_run_stops_its_engine_process_and_the_worker_runs_the_next_job(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    for i in range(8):
        submitted_demonstration(project, personas.alice, f"An owl sees the moon {i}.", now)
    worker_env["INSTRUCTLOOP_LAUNCHER"] = "subprocess"
    worker = start_worker(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        run = _launch(project, personas.admin, tiny_base, max_steps=5000, batch_size=2)
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 3, timeout=180)
        run_dir = str(storage.run_dir(run))
        assert any(run_dir in command for command in _engine_children())
        client = Client()
        client.force_login(personas.admin)
        client.post(f"/p/{project.slug}/runs/{run.pk}/cancel/")
        run = wait_until(lambda: _finished(run.pk), timeout=60)
        assert run.status == RunStatus.CANCELLED and run.step < 5000, run.error
        wait_until(lambda: not any(run_dir in c for c in _engine_children()), timeout=30)
        # The worker is still there: the next job runs to the end.
        second = _launch(project, personas.admin, tiny_base, max_steps=2, batch_size=2)
        second = wait_until(lambda: _finished(second.pk), timeout=180)
    finally:
        worker.stop()
    assert second.status == RunStatus.SUCCEEDED, second.error + worker.log()[-3000:]
    assert not ModelVersion.objects.filter(training_run=run).exists()
    for done in (run, second):
        shutil.rmtree(storage.run_dir(done), ignore_errors=True)
    shutil.rmtree(Path(settings.MODEL_ROOT) / storage.run_key(second), ignore_errors=True)


def test_an_engine_that_crashes_fails_its_run_with_the_reason_and_registers_nothing(
    project, personas, worker_env, tmp_path, now
):
    """A base model whose weights file is corrupt: the engine process raises while loading."""
    name = f"corrupt-{uuid.uuid4().hex[:8]}"
    target = settings.MODEL_ROOT / name
    build_toy_model(tmp_path / "tiny")
    shutil.copytree(tmp_path / "tiny", target)
    (target / "model.safetensors").write_bytes(b"not a safetensors file")
    corrupt = ModelVersionFactory(project=project, name=name, kind="base", path=name)
    for i in range(4):
        submitted_demonstration(project, personas.alice, f"Some bread {i}.", now)
    worker_env["INSTRUCTLOOP_LAUNCHER"] = "subprocess"
    worker = start_worker(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        run = _launch(project, personas.admin, corrupt, max_steps=2, batch_size=2)
        run = wait_until(lambda: _finished(run.pk), timeout=120)
    finally:
        worker.stop()
        shutil.rmtree(target, ignore_errors=True)
    assert run.status == RunStatus.FAILED and run.attempt == 1
    assert "SafetensorError" in run.error or "safetensors" in run.error.lower(), run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)


def _launch_in_a_process_whose_broker_is_down(project, admin, base, worker_env, **config) -> str:
    """The launch form posted by a web process whose broker does not answer (a closed port)."""
    script = f"""
import django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
client = Client(HTTP_HOST="localhost")
client.force_login(get_user_model().objects.get(pk={admin.pk}))
response = client.post("/p/{project.slug}/runs/", {{"kind": "sft", "base_model": {base.pk}, "confirm": "on",
                       **{config!r}}})
print(response.status_code, response.get("Location", ""))
"""
    env = {**worker_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_run_launched_while_the_broker_is_down_waits_with_the_reason_and_runs_once_it_is_back(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    for i in range(8):
        submitted_demonstration(project, personas.alice, f"Tea for the king {i}.", now)
    answer = _launch_in_a_process_whose_broker_is_down(
        project, personas.admin, tiny_base, worker_env, max_steps=2, batch_size=2
    )
    run = TrainingRun.objects.get()
    assert answer == f"302 /p/{project.slug}/runs/{run.pk}/"  # not a 500
    assert run.status == RunStatus.QUEUED and run.dispatches == 0
    assert "the broker could not be reached" in run.dispatch_error
    client = Client()
    client.force_login(personas.admin)
    page = client.get(f"/p/{project.slug}/runs/{run.pk}/").content.decode()
    assert "Not queued:" in page and "Connection refused" in page
    # The broker answers again: a worker's start (and beat, every 30 s) sends the run again.
    worker = start_worker(env=worker_env, log_path=tmp_path / "worker.log")
    ready = time.monotonic()
    try:
        run = wait_until(lambda: _finished(run.pk), timeout=180)
    finally:
        worker.stop()
    recovered_in = time.monotonic() - ready
    assert run.status == RunStatus.SUCCEEDED, run.error + worker.log()[-3000:]
    assert run.enqueued_at is not None and run.dispatch_error == ""  # sent, then claimed
    print(f"broker back -> run finished: {recovered_in:.1f} s (2 SFT steps included)")
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)
    shutil.rmtree(Path(settings.MODEL_ROOT) / storage.run_key(run), ignore_errors=True)


@pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"), reason="Redis redelivery"
)
def test_a_killed_workers_message_comes_back_after_the_visibility_timeout(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    for i in range(16):
        submitted_demonstration(project, personas.alice, f"A red ball in the river {i}.", now)
    worker_env["INSTRUCTLOOP_BROKER_VISIBILITY_SECONDS"] = "5"
    first = start_worker(env=worker_env, log_path=tmp_path / "first.log")
    run = _launch(project, personas.admin, tiny_base, max_steps=300, batch_size=4)
    try:
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 3, timeout=180)
    finally:
        first.process.kill()  # no acknowledgement: the message stays unacked in Redis
        first.process.wait()
    task_id = TrainingRun.objects.get(pk=run.pk).lease_owner.rsplit(":", 1)[1]
    # Redis gives the message back once it has been unacknowledged for 5 s; a copy that arrives
    # while the dead worker's lease (3 s here) still holds the run is skipped, as a duplicate.
    wait_until(
        lambda: not TrainingRun.objects.filter(pk=run.pk, lease_expires_at__gt=_now()).exists(),
        timeout=30,
    )
    second = start_worker(env=worker_env, log_path=tmp_path / "second.log")
    try:
        # The very message the killed worker held (its task id), not only beat's new one.
        wait_until(lambda: f"run_training[{task_id}] received" in second.log(), timeout=60)
        run = wait_until(lambda: _finished(run.pk), timeout=300)
    finally:
        second.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error + second.log()[-3000:]
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    shutil.rmtree(storage.run_dir(run), ignore_errors=True)
    shutil.rmtree(Path(settings.MODEL_ROOT) / storage.run_key(run), ignore_errors=True)


def test_an_engine_process_stops_when_its_worker_is_killed(
    project, personas, tiny_base, worker_env, tmp_path, now
):
    """A SIGKILLed worker must not leave its engine running (holding a GPU, writing into the run
    directory a resumed attempt will use). The engine gets a parent-death signal; here its next
    progress line (into a pipe nobody reads) would stop it too, so this shows the outcome, not
    which of the two did it."""
    for i in range(8):
        submitted_demonstration(project, personas.alice, f"The moon over tea {i}.", now)
    worker_env["INSTRUCTLOOP_LAUNCHER"] = "subprocess"
    worker = start_worker(env=worker_env, log_path=tmp_path / "worker.log")
    run = _launch(project, personas.admin, tiny_base, max_steps=5000, batch_size=2)
    run_dir = str(storage.run_dir(run))
    try:
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 3, timeout=180)
        assert any(run_dir in command for command in _engine_children())
    finally:
        worker.process.kill()
        worker.process.wait()
    wait_until(lambda: not any(run_dir in c for c in _engine_children()), timeout=20)
    shutil.rmtree(run_dir, ignore_errors=True)
