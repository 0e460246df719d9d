"""Copy the links into the new tables (see 0003): model versions, samples, round steps."""

from django.db import migrations


def copy_links(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    ModelVersion = apps.get_model("labeling", "ModelVersion")
    Completion = apps.get_model("labeling", "Completion")
    Round = apps.get_model("training", "Round")
    RunSample = apps.get_model("training", "RunSample")
    RoundStep = apps.get_model("training", "RoundStep")

    for version_id, run_id in ModelVersion.objects.filter(training_run__isnull=False).values_list(
        "pk", "training_run_id"
    ):
        TrainingRun.objects.filter(pk=run_id).update(model_version_id=version_id)
    samples = Completion.objects.filter(sampling_run__isnull=False).values_list(
        "pk", "sampling_run_id"
    )
    RunSample.objects.bulk_create(
        (RunSample(run_id=run_id, completion_id=pk) for pk, run_id in samples.iterator()),
        batch_size=5000,
    )
    for round_ in Round.objects.order_by("pk"):
        steps = [("reward", round_.reward_run_id), ("ppo", round_.ppo_run_id)]
        steps += [("sample", pk) for pk in round_.sample_runs.order_by("pk").values_list("pk", flat=True)]
        RoundStep.objects.bulk_create(
            RoundStep(round=round_, position=position, role=role, run_id=run_id)
            for position, (role, run_id) in enumerate((s for s in steps if s[1] is not None))
        )


def copy_links_back(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    ModelVersion = apps.get_model("labeling", "ModelVersion")
    Completion = apps.get_model("labeling", "Completion")
    RunSample = apps.get_model("training", "RunSample")
    RoundStep = apps.get_model("training", "RoundStep")

    for run_id, version_id in TrainingRun.objects.filter(model_version__isnull=False).values_list(
        "pk", "model_version_id"
    ):
        ModelVersion.objects.filter(pk=version_id).update(training_run_id=run_id)
    for run_id, completion_id in RunSample.objects.values_list("run_id", "completion_id"):
        Completion.objects.filter(pk=completion_id).update(sampling_run_id=run_id)
    for step in RoundStep.objects.select_related("round").order_by("round_id", "position"):
        if step.role == "sample":
            step.round.sample_runs.add(step.run_id)
        else:
            setattr(step.round, f"{step.role}_run_id", step.run_id)
            step.round.save(update_fields=[f"{step.role}_run"])


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0003_comparison"),
        ("training", "0003_runs_own_their_links"),
    ]

    operations = [migrations.RunPython(copy_links, copy_links_back)]
