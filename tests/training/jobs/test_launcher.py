"""The subprocess launcher's supervision, against real child processes and a real run row."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.utils import timezone

from tests.factories import ModelVersionFactory
from training import launcher, loop
from training.models import RunMetric, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)  # the heartbeat's thread has a connection


@pytest.fixture
def claimed(project):
    base = ModelVersionFactory(project=project, kind="base", path="x")
    run = TrainingRun.objects.create(project=project, kind="sft", base_model=base)
    loop.run_claim(run_id=run.pk, worker="w", now=timezone.now())
    return run


def _child(script: str, progress_write: int) -> subprocess.Popen:
    code = "import os, sys\nfd = int(sys.argv[1])\n" + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(progress_write)],
        stdout=subprocess.DEVNULL,
        pass_fds=(progress_write,),
    )


def test_progress_comes_on_its_own_pipe_and_the_last_lines_before_exit_are_not_lost(claimed):
    """The child prints to stdout as libraries do (here: to the log, not the pipe), writes its
    progress lines in pieces, and exits right after its last one."""
    import os

    read, write = os.pipe()
    child = _child(
        """
        print("a library's banner, not progress")
        for step in range(1, 4):
            line = ('{"step": %d, "total_steps": 3, "metrics": {"train/loss": %d}}\\n' % (step, step))
            os.write(fd, line[:10].encode())
            os.write(fd, line[10:].encode())
        """,
        write,
    )
    os.close(write)
    with launcher.Heartbeat(claimed.pk, "w") as beat:
        launcher._supervise(child, read, beat)
    os.close(read)
    assert child.returncode == 0
    run = TrainingRun.objects.get(pk=claimed.pk)
    assert (run.step, run.total_steps) == (3, 3)
    losses = RunMetric.objects.filter(run=run, name="train/loss").order_by("step")
    assert list(losses.values_list("step", "value")) == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_a_cancel_stops_a_child_that_reports_no_progress(claimed):
    """A long model load sends no progress: the cancel is seen within a second or two anyway."""
    import os
    import time

    read, write = os.pipe()
    child = _child("import time\ntime.sleep(60)\n", write)
    os.close(write)
    TrainingRun.objects.filter(pk=claimed.pk).update(cancel_requested=True)
    started = time.monotonic()
    with pytest.raises(launcher.Cancelled), launcher.Heartbeat(claimed.pk, "w") as beat:
        beat.flush()  # what the heartbeat's thread does every few seconds
        try:
            launcher._supervise(child, read, beat)
        except launcher.Cancelled:
            launcher._stop(child)
            raise
    os.close(read)
    assert time.monotonic() - started < 15 and child.poll() is not None


def test_a_run_whose_outputs_cannot_be_stored_fails_once_with_the_reason(
    project, personas, settings, tmp_path
):
    """The engine finished, but registering its model fails (here: an imported model already
    has the version's name). Before, the error escaped the task: the run stayed 'running' and
    was retried until it gave up as 'worker lost'. Now it fails at once, saying why."""
    from labeling.models import ModelVersion
    from tests.factories import submitted_demonstration
    from tests.training.engine.toy_model import build_toy_model
    from training import runs

    settings.MODEL_ROOT, settings.RUN_ROOT = tmp_path / "models", tmp_path / "runs"
    build_toy_model(settings.MODEL_ROOT / "toy")
    toy = ModelVersionFactory(project=project, name="toy", kind="base", path="toy")
    for i in range(4):
        submitted_demonstration(project, personas.alice, f"Bread and tea {i}.", timezone.now())
    run = runs.run_start(
        project=project, kind="sft", config={"max_steps": 1, "batch_size": 2},
        created_by=personas.admin, base_model=toy,
    )  # fmt: skip
    ModelVersion.objects.create(project=project, name=f"sft-run-{run.pk}", kind="external")

    assert launcher.execute(run_id=run.pk, worker="w") == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.attempt == 1
    assert "IntegrityError" in run.error
    assert "model_version_unique_name" in run.error or "labeling_modelversion.name" in run.error
