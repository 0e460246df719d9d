"""The links between runs and the human side move into the training app, and a round becomes an
ordered recipe of steps.

- `TrainingRun.model_version` replaces `labeling.ModelVersion.training_run`;
- `RunSample` (run → completion) replaces `labeling.Completion.sampling_run`;
- `RoundStep` (round, position, role, run) replaces `Round.reward_run`, `.ppo_run`, `.sample_runs`;
- `RoundStatus.CANCELLED` is gone: nothing ever set it.

The rows are copied here, while labeling's old columns still exist; labeling 0004 drops them.
"""

import django.db.models.deletion
from django.db import migrations, models


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
        ("training", "0002_rounds"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="model_version",
            field=models.OneToOneField(
                blank=True,
                help_text="The version it registered: one run registers exactly one version.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="training_run_new",
                to="labeling.modelversion",
            ),
        ),
        migrations.CreateModel(
            name="RunSample",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("completion", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="run_sample", to="labeling.completion")),
                ("run", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="samples", to="training.trainingrun")),
            ],
        ),
        migrations.CreateModel(
            name="RoundStep",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("position", models.PositiveSmallIntegerField()),
                ("role", models.CharField(choices=[("reward", "Reward model"), ("ppo", "PPO"), ("sample", "Sampling")], max_length=16)),
                ("round", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="steps", to="training.round")),
                ("run", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="round_step", to="training.trainingrun")),
            ],
            options={"ordering": ["position"]},
        ),
        migrations.AddConstraint(
            model_name="roundstep",
            constraint=models.UniqueConstraint(fields=("round", "position"), name="round_step_position"),
        ),
        migrations.AddConstraint(
            model_name="roundstep",
            constraint=models.CheckConstraint(condition=models.Q(("role__in", ["reward", "ppo", "sample"])), name="round_step_role_valid"),
        ),
        migrations.RunPython(copy_links, copy_links_back),
        migrations.RemoveField(model_name="round", name="ppo_run"),
        migrations.RemoveField(model_name="round", name="reward_run"),
        migrations.RemoveField(model_name="round", name="sample_runs"),
        migrations.RemoveConstraint(model_name="round", name="round_status_valid"),
        migrations.AlterField(
            model_name="round",
            name="status",
            field=models.CharField(choices=[("running", "Running"), ("succeeded", "Succeeded"), ("failed", "Failed")], default="running", max_length=16),
        ),
        migrations.AddConstraint(
            model_name="round",
            constraint=models.CheckConstraint(condition=models.Q(("status__in", ["running", "succeeded", "failed"])), name="round_status_valid"),
        ),
        migrations.AlterField(
            model_name="trainingrun",
            name="config",
            field=models.JSONField(default=dict, help_text="The resolved config it runs with: every setting, defaults included (not the server-set paths)."),
        ),
    ]
