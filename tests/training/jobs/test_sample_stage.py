"""A sampling run through the platform on the toy model, where its samples repeat: run_start →
the launcher → the engine samples again what repeated → a ranking task per prompt with 2 or more
different outputs, and the prompts left without one counted on the run."""

from __future__ import annotations

import shutil

import pytest

from labeling.models import Completion, Task
from tests.factories import ModelVersionFactory, PromptFactory
from tests.training.engine.toy_model import build_toy_model
from training import launcher, runs, selectors
from training.models import RunStatus, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def toy_base(project, settings, tmp_path):
    settings.MODEL_ROOT = tmp_path / "models"
    settings.RUN_ROOT = tmp_path / "runs"
    build_toy_model(settings.MODEL_ROOT / "toy")
    yield ModelVersionFactory(project=project, name="toy", kind="base", path="toy")
    shutil.rmtree(tmp_path, ignore_errors=True)


def _sample(project, personas, base, **config) -> TrainingRun:
    """The random toy model at temperature 0.1: near greedy, so its K samples often repeat."""
    run = runs.run_start(
        project=project, kind="sample", base_model=base, created_by=personas.admin,
        config={"temperature": 0.1, "batch_size": 32, "seed": 0, **config},
    )  # fmt: skip
    assert launcher.execute(run_id=run.pk, worker="test-worker") == "succeeded"
    return TrainingRun.objects.get(pk=run.pk)


def _tasks_of(run: TrainingRun) -> list[list[str]]:
    tasks = Task.objects.filter(
        kind="ranking", task_completions__completion__run_sample__run=run
    ).distinct()
    return [list(t.completions.values_list("text", flat=True)) for t in tasks]


def test_a_near_greedy_sampling_run_makes_a_task_of_every_prompt_with_two_different_outputs(
    project, personas, toy_base
):
    for i in range(6):  # fixed texts: the factory's numbering depends on the tests run before
        PromptFactory(project=project, text=f"Write a sentence about the number {i}.")
    run = _sample(project, personas, toy_base, max_new_tokens=3)  # K: the project's 4
    assert run.status == RunStatus.SUCCEEDED and run.config["k"] == project.k == 4
    assert Completion.objects.filter(run_sample__run=run).count() > 6 * 4  # it sampled again
    tasks = _tasks_of(run)
    assert all(2 <= len(set(texts)) == len(texts) <= 4 for texts in tasks)
    resampled = selectors.sampling_outcome(run=run)
    assert resampled == {"prompts": 6, "ranking": 6, "dropped_prompts": 0,
                         "fewer_than_k": sum(len(t) < 4 for t in tasks)}  # fmt: skip
    # The same first draw without sampling again leaves more tasks short of K different outputs.
    once = _sample(project, personas, toy_base, max_new_tokens=3, resample_duplicates=0)
    assert selectors.sampling_outcome(run=once)["fewer_than_k"] > resampled["fewer_than_k"]

    # One token each: most prompts still have one output after two more draws. They are counted
    # on the run (its page says so: test_runs.py), not dropped silently.
    one_token = _sample(project, personas, toy_base, max_new_tokens=1)
    outcome = selectors.sampling_outcome(run=one_token)
    assert outcome["dropped_prompts"] >= 1
    assert outcome["ranking"] == len(_tasks_of(one_token)) == 6 - outcome["dropped_prompts"]
