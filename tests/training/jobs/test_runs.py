"""Training-run rules on the row: lease, redelivery, retries, cancel, one model version, safe paths."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from labeling.errors import Conflict, Invalid
from labeling.models import ModelVersion
from tests.factories import ModelVersionFactory, PromptFactory
from training import loop, runs, storage
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def base(project, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    (settings.MODEL_ROOT / "tiny-base").mkdir(parents=True)
    settings.RUN_ROOT = tmp_path / "runs"
    return ModelVersionFactory(project=project, name="tiny-base", kind="base", path="tiny-base")


@pytest.fixture
def run(project, base):
    return TrainingRun.objects.create(
        project=project,
        kind="sft",
        base_model=base,
        dataset={"demonstrations": [1]},
        max_attempts=2,
    )


def test_a_redelivered_message_does_not_run_a_job_twice_at_once(run, now):
    first = loop.run_claim(run_id=run.pk, worker="w1", now=now)
    second = loop.run_claim(run_id=run.pk, worker="w2", now=now + timedelta(seconds=1))
    assert first is not None and first.attempt == 1
    assert second is None
    assert TrainingRun.objects.get(pk=run.pk).lease_owner == "w1"


def test_a_run_whose_lease_lapsed_is_requeued_and_claimed_by_the_next_worker(run, now):
    loop.run_claim(run_id=run.pk, worker="killed", now=now)
    later = now + timedelta(seconds=runs.lease_seconds() + 1)
    assert runs.runs_to_requeue(now=now) == []
    assert runs.runs_to_requeue(now=later) == [run.pk]
    again = loop.run_claim(run_id=run.pk, worker="fresh", now=later)
    assert again.attempt == 2 and again.lease_owner == "fresh"
    with pytest.raises(runs.LeaseLost):
        runs.run_progress(
            run_id=run.pk, worker="killed", step=3, total_steps=10, metrics=[], now=later
        )


def test_a_job_that_keeps_dying_fails_with_its_reason_after_max_attempts(run, now):
    t = now
    for _ in range(run.max_attempts):
        assert loop.run_claim(run_id=run.pk, worker="w", now=t) is not None
        loop.run_fail(run_id=run.pk, worker="w", error="CUDA out of memory", retry=True, now=t)
        t += timedelta(seconds=1)
    assert loop.run_claim(run_id=run.pk, worker="w", now=t) is None
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "CUDA out of memory" in run.error and "2 attempts" in run.error


def test_progress_stores_metrics_once_per_step_even_after_a_resume(run, now):
    loop.run_claim(run_id=run.pk, worker="w", now=now)
    runs.run_progress(
        run_id=run.pk, worker="w", step=2, total_steps=4, metrics=[(2, "loss", 1.5)], now=now
    )
    runs.run_progress(
        run_id=run.pk, worker="w", step=2, total_steps=4, metrics=[(2, "loss", 1.25)], now=now
    )
    points = list(run.metric_points.values_list("step", "name", "value"))
    assert points == [(2, "loss", 1.25)]
    assert TrainingRun.objects.get(pk=run.pk).progress == 0.5


def test_cancel_stops_a_queued_run_now_and_flags_a_running_one(project, run, base, now):
    loop.run_cancel(run_id=run.pk, project=project, now=now)
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    with pytest.raises(Conflict):
        loop.run_cancel(run_id=run.pk, project=project, now=now)
    other = TrainingRun.objects.create(project=project, kind="sft", base_model=base, dataset={})
    loop.run_claim(run_id=other.pk, worker="w", now=now)
    loop.run_cancel(run_id=other.pk, project=project, now=now)
    assert runs.run_progress(
        run_id=other.pk, worker="w", step=1, total_steps=2, metrics=[], now=now
    )


def test_success_registers_exactly_one_model_version_even_if_reported_twice(run, now, settings):
    produced = storage.run_dir(run) / "model"
    produced.mkdir(parents=True)
    (produced / "model.safetensors").write_bytes(b"x")
    loop.run_claim(run_id=run.pk, worker="w", now=now)
    result = {"output_dir": str(produced.parent), "metrics": {"val_loss": 1.0, "note": "text"}}
    loop.run_succeed(run_id=run.pk, worker="w", result=result, now=now)
    loop.run_succeed(run_id=run.pk, worker="w", result=result, now=now)
    assert ModelVersion.objects.filter(project=run.project, kind="sft").count() == 1
    version = ModelVersion.objects.get(training_run=run)
    assert TrainingRun.objects.get(pk=run.pk).model_version == version
    assert version.path == storage.run_key(run) and version.path.startswith(f"run-{run.pk}-")
    assert version.metrics == {"val_loss": 1.0}
    assert (settings.MODEL_ROOT / version.path / "model.safetensors").exists()
    # Published through the local store: its manifest, written last, is what the sha256 covers.
    manifest = (settings.MODEL_ROOT / version.path / "manifest.json").read_bytes()
    assert version.sha256 == hashlib.sha256(manifest).hexdigest()
    assert version.artifact_uri == f"file://{settings.MODEL_ROOT.resolve()}/{version.path}"
    # A version is the output of one run at most (the link is unique in the database).
    other = TrainingRun.objects.create(project=run.project, kind="sft", base_model=run.base_model)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.filter(pk=other.pk).update(model_version=version)


@pytest.mark.parametrize("path", ["../x", "/etc", "~/models", "./x", "a/../../b", ""])
def test_model_paths_that_escape_the_model_root_are_refused(project, base, path):
    version = ModelVersionFactory(project=project, kind="base", path=path)
    with pytest.raises(Invalid):
        storage.model_path(version)


def test_a_model_path_through_a_symlink_is_refused(project, base, settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (settings.MODEL_ROOT / "link").symlink_to(outside)
    version = ModelVersionFactory(project=project, kind="base", path="link")
    with pytest.raises(Invalid):
        storage.model_path(version)


def test_a_local_base_model_resolves_under_the_model_root_and_a_hub_name_passes_through(
    project, base, settings
):
    assert storage.model_path(base) == str(settings.MODEL_ROOT / "tiny-base")
    hub = ModelVersionFactory(project=project, kind="base", path="openai-community/gpt2")
    assert storage.model_path(hub) == "openai-community/gpt2"


def test_run_start_refuses_server_owned_config_keys_and_empty_data(project, base, personas):
    with pytest.raises(Invalid, match="output_dir"):
        runs.run_start(
            project=project,
            kind="sft",
            config={"output_dir": "/tmp/x"},
            created_by=personas.admin,
            base_model=base,
        )
    with pytest.raises(Invalid, match="no data"):
        runs.run_start(
            project=project, kind="sft", config={}, created_by=personas.admin, base_model=base
        )
    assert not TrainingRun.objects.exists()


def test_every_prompt_with_two_different_samples_becomes_a_task_and_the_rest_are_counted(
    project, base, personas, now
):
    """K = 4 for the run; the engine sampled some prompts again because they repeated. A task
    keeps each prompt's first 4 different texts, or the 2 or 3 it has; a prompt with one text
    gets none, and the run says how many."""
    from labeling.models import Completion, Task
    from training.models import RunMetric

    prompts = [PromptFactory(project=project) for _ in range(4)]
    texts = {
        prompts[0].pk: ["a", "a", "b", "c", "b", "d"],  # 4 distinct: a, b, c, d
        prompts[1].pk: ["a", "a", "a", "b", "c", "c"],  # 3 distinct: a task of 3
        prompts[2].pk: ["w", "x", "y", "z"],  # 4 distinct at once
        prompts[3].pk: ["q", "q", "q", "q", "q", "q", "q"],  # one text, even sampled again
    }
    run = TrainingRun.objects.create(
        project=project, kind="sample", base_model=base, config={"k": 4},
        dataset={"prompts": list(texts), "create_tasks": True},
    )  # fmt: skip
    loop.run_claim(run_id=run.pk, worker="w", now=now)
    samples = [
        {"prompt_id": pid, "sample_index": j, "completion": text, "provenance": {"seed": j}}
        for pid, answers in texts.items() for j, text in enumerate(answers)
    ]  # fmt: skip
    loop.run_succeed(
        run_id=run.pk, worker="w", result={"output_dir": "x", "samples": samples}, now=now
    )

    assert Completion.objects.filter(run_sample__run=run).count() == 23  # every sample is kept
    ranked = {
        task.prompt_id: sorted(task.completions.values_list("text", flat=True))
        for task in Task.objects.filter(project=project, kind="ranking")
    }
    assert ranked == {
        prompts[0].pk: ["a", "b", "c", "d"], prompts[1].pk: ["a", "b", "c"],
        prompts[2].pk: ["w", "x", "y", "z"],
    }  # fmt: skip
    counts = dict(RunMetric.objects.filter(run=run).values_list("name", "value"))
    assert counts == {
        "tasks/prompts": 4, "tasks/ranking": 3, "tasks/fewer_than_k": 1, "tasks/dropped_prompts": 1
    }  # fmt: skip
    reviewer = Client()
    reviewer.force_login(personas.reviewer)
    page = reviewer.get(f"/p/{project.slug}/runs/{run.pk}/").content.decode()
    assert ("4 prompts sampled: 3 ranking tasks (1 with fewer than K = 4 different outputs);"
            " 1 prompt without a task") in page  # fmt: skip


def test_a_sample_with_a_nul_character_is_stored_with_a_replacement_character(project, base, now):
    from labeling.models import Completion

    prompt = PromptFactory(project=project)
    run = TrainingRun.objects.create(
        project=project, kind="sample", base_model=base, config={"k": 1},
        dataset={"prompts": [prompt.pk], "create_tasks": False},
    )  # fmt: skip
    loop.run_claim(run_id=run.pk, worker="w", now=now)
    sample = {"prompt_id": prompt.pk, "sample_index": 0, "completion": "a\x00b", "provenance": {}}
    loop.run_succeed(
        run_id=run.pk, worker="w", result={"output_dir": "x", "samples": [sample]}, now=now
    )

    assert Completion.objects.get(run_sample__run=run).text == "a\ufffdb"


def test_a_queued_run_no_worker_took_is_sent_again_and_less_often_each_time(run, now):
    """A lost message (a broker restarted without persistence) or one never sent (the broker was
    down): beat sends the run again after a lease, then after 2, 4, ... leases."""
    lease = timedelta(seconds=runs.lease_seconds())
    TrainingRun.objects.filter(pk=run.pk).update(enqueued_at=now, dispatches=1)
    assert runs.runs_to_requeue(now=now + lease / 2) == []
    assert runs.runs_to_requeue(now=now + lease * 1.1) == [run.pk]
    TrainingRun.objects.filter(pk=run.pk).update(dispatches=3)  # sent three times: wait 4 leases
    assert runs.runs_to_requeue(now=now + lease * 3.9) == []
    assert runs.runs_to_requeue(now=now + lease * 4.1) == [run.pk]
    TrainingRun.objects.filter(pk=run.pk).update(dispatches=40)  # the wait stops doubling at 64
    assert runs.runs_to_requeue(now=now + lease * 65) == [run.pk]
    # The broker could not be reached: sent again at the next look, whatever the wait.
    TrainingRun.objects.filter(pk=run.pk).update(dispatch_error="refused", dispatches=0)
    assert runs.runs_to_requeue(now=now) == [run.pk]
    # Never sent at all (a run from before this rule): its creation time counts.
    TrainingRun.objects.filter(pk=run.pk).update(dispatch_error="", enqueued_at=None)
    assert runs.runs_to_requeue(now=run.created_at + lease * 1.1) == [run.pk]
    # A run an admin cancelled, or one that finished, is never sent again.
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    assert runs.runs_to_requeue(now=now + lease * 100) == []


def test_the_web_host_starts_a_run_on_a_published_version_without_opening_its_files(
    project, base, personas, now
):
    """Whether the files are there is the worker's to find out; the web host checks the key."""
    from tests.factories import submitted_demonstration

    published = ModelVersionFactory(
        project=project, kind="sft", path="run-9-20260101", sha256="a" * 64,
        artifact_uri="s3://elsewhere/models/run-9-20260101",
    )  # fmt: skip
    submitted_demonstration(project, personas.alice, "Bread and tea.", now)
    run = runs.run_start(
        project=project, kind="sft", config={}, created_by=personas.admin, base_model=published
    )
    assert run.base_model == published
    unsafe = ModelVersionFactory(project=project, kind="sft", path="../x", sha256="b" * 64,
                                 artifact_uri="s3://elsewhere/models/../x")  # fmt: skip
    with pytest.raises(Invalid, match="unsafe key"):
        runs.run_start(
            project=project, kind="sft", config={}, created_by=personas.admin, base_model=unsafe
        )
