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
