"""The move of run links out of labeling (training 0003, labeling 0004) keeps every link.

The database is migrated back to before the move, filled through the historical models the way
the old code wrote rows, migrated forward, and read with today's models; then back again, to show
the move is reversible.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from labeling.models import Completion, ModelVersion
from training.models import Round, RoundStep, TrainingRun

BEFORE = [("labeling", "0003_comparison"), ("training", "0002_rounds")]

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _leaves():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_model_versions_samples_and_round_stages_survive_the_move_both_ways():
    old = _migrate(BEFORE)
    Project = old.get_model("labeling", "Project")
    Version = old.get_model("labeling", "ModelVersion")
    Prompt = old.get_model("labeling", "Prompt")
    OldCompletion = old.get_model("labeling", "Completion")
    Run = old.get_model("training", "TrainingRun")
    OldRound = old.get_model("training", "Round")

    project = Project.objects.create(name="p", slug="p")
    base = Version.objects.create(project=project, name="base", kind="base", path="b")
    reward_run = Run.objects.create(project=project, kind="reward", base_model=base)
    ppo_run = Run.objects.create(project=project, kind="ppo", base_model=base)
    samplers = [Run.objects.create(project=project, kind="sample", base_model=base) for _ in "ab"]
    rm = Version.objects.create(
        project=project, name="rm", kind="reward", path="r", training_run=reward_run
    )
    prompt = Prompt.objects.create(project=project, messages=[], text="q", content_hash="h")
    sampled = [
        OldCompletion.objects.create(
            prompt=prompt, model_version=base, text=t, sampling_run=samplers[i % 2]
        )
        for i, t in enumerate("wxyz")
    ]
    imported = OldCompletion.objects.create(prompt=prompt, model_version=base, text="imported")
    round_ = OldRound.objects.create(
        project=project, number=1, policy=base, reward_run=reward_run, ppo_run=ppo_run
    )
    round_.sample_runs.add(*samplers)

    _migrate(_leaves())
    assert TrainingRun.objects.get(pk=reward_run.pk).model_version_id == rm.pk
    assert ModelVersion.objects.get(pk=rm.pk).training_run.pk == reward_run.pk
    assert TrainingRun.objects.get(pk=ppo_run.pk).model_version is None
    for i, completion in enumerate(sampled):
        assert Completion.objects.get(pk=completion.pk).run_sample.run_id == samplers[i % 2].pk
    assert not hasattr(Completion.objects.get(pk=imported.pk), "run_sample")
    steps = list(
        RoundStep.objects.filter(round_id=round_.pk).values_list("position", "role", "run")
    )
    assert steps == [
        (0, "reward", reward_run.pk), (1, "policy", ppo_run.pk),
        (2, "sample", samplers[0].pk), (3, "sample", samplers[1].pk),
    ]  # fmt: skip
    today = Round.objects.get(pk=round_.pk)
    assert today.reward_run.pk == reward_run.pk and today.policy_run.pk == ppo_run.pk

    back = _migrate(BEFORE)
    OldRound = back.get_model("training", "Round")
    restored = OldRound.objects.get(pk=round_.pk)
    assert (restored.reward_run_id, restored.ppo_run_id) == (reward_run.pk, ppo_run.pk)
    assert sorted(restored.sample_runs.values_list("pk", flat=True)) == [r.pk for r in samplers]
    assert back.get_model("labeling", "ModelVersion").objects.get(pk=rm.pk).training_run_id == (
        reward_run.pk
    )
    OldCompletion = back.get_model("labeling", "Completion")
    assert OldCompletion.objects.get(pk=sampled[1].pk).sampling_run_id == samplers[1].pk
    assert OldCompletion.objects.get(pk=imported.pk).sampling_run_id is None

    call_command("migrate", verbosity=0)  # leave the test database as every other test expects


def test_an_upgrade_stops_all_but_the_newest_of_two_running_rounds_before_the_rule():
    old = _migrate([("training", "0009_run_dispatch"), ("labeling", "0005_policy_label")])
    Project = old.get_model("labeling", "Project")
    Version = old.get_model("labeling", "ModelVersion")
    OldRound = old.get_model("training", "Round")
    project = Project.objects.create(name="p", slug="p")
    base = Version.objects.create(project=project, name="base", kind="base", path="b")
    older = OldRound.objects.create(project=project, number=1, policy=base, status="running")
    newer = OldRound.objects.create(project=project, number=2, policy=base, status="running")
    other = Project.objects.create(name="q", slug="q")
    alone = OldRound.objects.create(
        project=other, number=1, status="running",
        policy=Version.objects.create(project=other, name="b", kind="base", path="b"),
    )  # fmt: skip

    _migrate(_leaves())
    assert Round.objects.get(pk=older.pk).status == "failed"
    assert "another round of this project was running" in Round.objects.get(pk=older.pk).error
    assert Round.objects.get(pk=newer.pk).status == "running"
    assert Round.objects.get(pk=alone.pk).status == "running"
    call_command("migrate", verbosity=0)
