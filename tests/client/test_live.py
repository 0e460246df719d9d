"""The client against a real server over real HTTP: pytest-django's live_server (the test
database, committed rows: transactional_db), and for the database outage a gunicorn process whose
database comes back only after its first 503. Each test says what it tried."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from instructloop.client import ApiError, Client, ImportResult, JobFailed, Project, Run
from labeling import queue, services
from labeling.models import ModelVersion, Role, Split
from tests.factories import (
    CompletionFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    api_key,
    member,
    submitted_demonstration,
    submitted_ranking,
)
from tests.worker import database_url
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests-123"  # tests/factories.py's UserFactory
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(transactional_db, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    settings.RUN_ROOT = tmp_path / "runs"
    project = ProjectFactory(slug="client-tests", k=2)

    class W:
        admin = member(project, "ada_admin", Role.ADMIN)
        alice = member(project, "alice_labeler")

    W.project = project
    PromptFactory.create_batch(2, project=project, split=Split.TRAIN)
    W.pid = project.pk
    W.base = ModelVersionFactory(
        project=project, name="tiny-base", kind=ModelVersion.Kind.BASE, path="tiny-base"
    )
    return W


def test_login_import_prompts_list_projects_start_a_run_and_read_it(live_server, world):
    client = Client.login(live_server.url, "ada_admin", PASSWORD, retries=0)

    project = client.project("client-tests")
    assert isinstance(project, Project)
    assert (project.id, project.role, project.k) == (world.project.pk, "admin", 2)
    assert [p.slug for p in client.projects()] == ["client-tests"]
    changed = client.update_project(project, guidelines="Be brief.", k=3)
    assert (changed.guidelines, changed.k, changed.name) == ("Be brief.", 3, project.name)

    imported = client.import_prompts(
        project, [{"prompt": "Name a colour."}, {"prompt": "Name a fruit."}]
    )
    assert isinstance(imported, ImportResult) and imported.created == 2

    started = client.sample(project, "tiny-base", config={"k": 2, "max_new_tokens": 8})
    assert isinstance(started, Run)
    assert (started.kind, started.status, started.base_model) == ("sample", "queued", "tiny-base")
    assert started.config["k"] == 2 and started.config["max_new_tokens"] == 8

    read = client.run(project, started.id)
    assert (read.id, read.status, read.metrics, read.next_since) == (started.id, "queued", (), -1)
    assert [r.id for r in client.runs(project)] == [started.id]
    assert [m.name for m in client.models(project)] == ["tiny-base"]


def test_errors_raise_api_error_with_the_servers_message(live_server, world):
    client = Client(live_server.url, api_key(world.admin), retries=0)

    with pytest.raises(ApiError) as bad_import:
        client.import_prompts(world.pid, [{"prompt": "fine"}, {"prompt": ""}, {"x": 1}])
    assert bad_import.value.status == 400
    assert [e["line"] for e in bad_import.value.errors] == [2, 3], bad_import.value.errors

    with pytest.raises(ApiError) as bad_setting:
        client.sample(world.pid, "tiny-base", config={"temprature": 0.7})
    assert bad_setting.value.status == 400 and "temprature" in str(bad_setting.value)

    with pytest.raises(ApiError) as no_model:
        client.sample(world.pid, "no-such-model")
    assert (no_model.value.status, no_model.value.detail) == (
        400,
        "No model named 'no-such-model' in this project.",
    )

    labeler = Client(live_server.url, api_key(world.alice), retries=0)
    with pytest.raises(ApiError) as forbidden:
        labeler.evaluation(world.pid)
    assert forbidden.value.status in (403, 404) and forbidden.value.detail

    with pytest.raises(ApiError) as unknown:
        client.run(world.pid, 999_999)
    assert (unknown.value.status, unknown.value.detail) == (404, "No such run.")


def test_a_script_names_the_gpu_queue_of_a_run_and_of_a_round(live_server, world, settings):
    settings.TRAINING_GPU_QUEUES = ["gpu", "gpu-big"]
    now = timezone.now()
    submitted_demonstration(world.project, world.alice, "An answer.", now)
    submitted_ranking(world.project, world.alice, now)
    client = Client(live_server.url, api_key(world.admin), retries=0)

    run = client.start_run(world.pid, "sft", "tiny-base", config={"max_steps": 1}, queue="gpu-big")
    assert (run.queue, run.ran_on) == ("gpu-big", "")
    assert TrainingRun.objects.get(pk=run.id).queue == "gpu-big"
    assert client.run(world.pid, run.id).queue == "gpu-big"
    assert client.start_run(world.pid, "sft", "tiny-base", config={"max_steps": 1}).queue == ""
    with pytest.raises(ApiError) as unknown:
        client.start_run(world.pid, "sft", "tiny-base", queue="tpu")
    assert (unknown.value.status, unknown.value.detail) == (
        400,
        "No GPU queue 'tpu'; the queues are gpu, gpu-big.",
    )

    with pytest.raises(ApiError) as unknown_round:
        client.start_round(world.pid, "tiny-base", queue="tpu")
    assert unknown_round.value.status == 400 and "gpu, gpu-big" in unknown_round.value.detail
    round_ = client.start_round(
        world.pid, "tiny-base", config={"reward": {"max_steps": 1}}, queue="gpu-big"
    )
    assert round_.queue == "gpu-big"
    steps = client.round(world.pid, round_.number).steps
    assert steps[0].run is not None and steps[0].run.queue == "gpu-big"


def test_paged_lists_follow_next_to_the_last_row(live_server, world):
    for i in range(4):
        ProjectFactory(slug=f"more-{i}").memberships.create(user=world.admin, role=Role.LABELER)
    client = Client(live_server.url, api_key(world.admin), retries=0)

    pages = []
    client._http.event_hooks["response"].append(lambda r: pages.append(str(r.url)))
    slugs = sorted(p.slug for p in client.projects(page_size=2))

    assert slugs == ["client-tests", "more-0", "more-1", "more-2", "more-3"]
    assert len(pages) == 3, pages  # 2 + 2 + 1, each page asked for by its `next` link
    assert "offset=4" in pages[-1]


@pytest.fixture
def short_lockout(settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)


def test_a_locked_out_login_is_retried_after_retry_after_and_then_succeeds(
    live_server, world, short_lockout
):
    answers = []
    for _ in range(2):
        with pytest.raises(ApiError) as wrong:
            Client.login(live_server.url, "ada_admin", "wrong password", retries=0)
        answers.append(wrong.value.status)
    assert answers == [400, 429]  # the second failure locks the account (and this address) out
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    client = Client.login(live_server.url, "ada_admin", PASSWORD, retries=3, sleep=sleep)

    assert waits and all(0 < w <= 2 for w in waits), waits  # the server's Retry-After
    assert time.monotonic() - started >= waits[0]
    assert client.project(world.project.pk).role == "admin"


def test_a_lockout_longer_than_max_wait_or_past_the_retries_is_raised_with_retry_after(
    live_server, world, short_lockout
):
    for _ in range(2):
        with pytest.raises(ApiError):
            Client.login(live_server.url, "ada_admin", "wrong password", retries=0)
    waits: list[float] = []

    with pytest.raises(ApiError) as too_long:
        Client.login(live_server.url, "ada_admin", PASSWORD, max_wait=0.5, sleep=waits.append)
    assert too_long.value.status == 429 and 0 < too_long.value.retry_after <= 2
    assert "Too many failed log-ins" in too_long.value.detail

    with pytest.raises(ApiError) as no_retries:
        Client.login(live_server.url, "ada_admin", PASSWORD, retries=0)
    assert no_retries.value.status == 429
    assert waits == []


class LateDatabase:
    """A TCP port in front of PostgreSQL that refuses connections until `open()`: the database
    is down, then comes back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nothing listens there until open()
        self.listener: socket.socket | None = None

    def open(self) -> None:
        if self.listener is not None:
            return
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.postgres_only
def test_a_database_outage_503_is_retried_after_retry_after_until_the_database_is_back(
    world, tmp_path
):
    settings_dict = connection.settings_dict
    database = LateDatabase(
        (settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    )
    url = database_url({**settings_dict, "HOST": "127.0.0.1", "PORT": database.port})
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "TEST_DATABASE_NAME"},
        "DATABASE_URL": url,
        "INSTRUCTLOOP_VAR_DIR": str(tmp_path),
        "DEBUG": "0",
        "LOG_LEVEL": "CRITICAL",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "instructloop.wsgi:application",
         "-b", f"127.0.0.1:{port}", "-w", "1", "--log-level", "warning"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn not up"
                time.sleep(0.2)
        with pytest.raises(ApiError) as unavailable:  # no retries: the 503 is raised
            Client(f"http://127.0.0.1:{port}", api_key(world.admin), retries=0).progress(world.pid)
        assert (unavailable.value.status, unavailable.value.retry_after) == (503, 5.0)
        assert unavailable.value.detail == "The database is unavailable; retry in a few seconds."
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            database.open()  # the database comes back while the client waits
            time.sleep(seconds)

        client = Client(f"http://127.0.0.1:{port}", api_key(world.admin), sleep=sleep)
        projects = list(client.projects())

        assert waits == [5.0]  # labeling/api/errors.py's Retry-After, honoured once
        assert [p.slug for p in projects] == ["client-tests"]
    finally:
        database.close()
        server.terminate()
        server.wait(timeout=30)


def test_resume_evaluation_tasks_comparisons_completions_and_exports(live_server, world):
    now = timezone.now()
    old = ModelVersionFactory(project=world.project, name="old", kind=ModelVersion.Kind.SFT)
    for prompt in PromptFactory.create_batch(2, project=world.project, split=Split.TEST):
        for model in (world.base, old):
            CompletionFactory(prompt=prompt, model_version=model)
    admin = Client(live_server.url, api_key(world.admin), retries=0)

    assert admin.create_evaluation_tasks(world.pid, "tiny-base", "old").created == 2
    again = admin.create_evaluation_tasks(world.pid, "tiny-base", "old")
    assert (again.created, again.skipped_identical) == (0, 0)  # skipped: made already
    lease = queue.claim_next(
        user_id=world.alice.pk, project=world.project, kind="comparison", now=now
    )
    services.comparison_submit(lease_id=lease.pk, user_id=world.alice.pk, winner="a", now=now)
    (judged,) = admin.comparisons(world.pid)
    assert (judged.labeler, judged.winner) == ("alice_labeler", "a")
    assert {judged.a.model, judged.b.model} == {"tiny-base", "old"}
    assert sorted(c.split for c in admin.completions(world.pid, world.base.pk)) == ["test", "test"]
    ab_tasks = list(admin.tasks(world.pid, kind="comparison"))
    assert len(ab_tasks) == 2 and all(t.kind == "comparison" for t in ab_tasks)
    assert {o.model for t in ab_tasks for o in t.completions} == {"tiny-base", "old"}
    assert [c.id for c in admin.comparisons(world.pid, model="old")] == [judged.id]
    assert isinstance(admin.refresh_evaluation(world.pid).computing, bool)
    invited = admin.invite_member(world.pid, "nina_new", role="reviewer")
    assert (invited.username, invited.role) == ("nina_new", "reviewer") and invited.invite_link

    run = admin.sample(world.pid, "tiny-base", config={"k": 2})
    with pytest.raises(ApiError) as not_failed:
        admin.resume_run(world.pid, run.id)
    assert not_failed.value.status == 409 and not_failed.value.detail
    TrainingRun.objects.filter(pk=run.id).update(status=RunStatus.FAILED, error="out of memory")
    with pytest.raises(JobFailed, match="out of memory"):
        admin.wait_run(world.pid, run.id, timeout=5)
    resumed = admin.resume_run(world.pid, run.id)
    assert (resumed.id, resumed.status) == (run.id, "queued")

    demonstration = submitted_demonstration(world.project, world.alice, "An answer.", now)
    lines = list(admin.export(world.pid, "sft"))
    assert [line["id"] for line in lines] == [demonstration.pk]
    assert lines[0]["messages"][-1] == {"role": "assistant", "content": "An answer."}
    assert admin.export_parquet(world.pid, "sft")[:4] == b"PAR1"
    with pytest.raises(ApiError) as bad_after:
        list(admin.export(world.pid, "sft", after=-1))
    assert bad_after.value.status == 400 and "after" in str(bad_after.value)
    assert admin.progress(world.pid).demonstration.submitted >= 1
