"""The links between runs and the human side move into the training app, and a round becomes an
ordered recipe of steps.

- `TrainingRun.model_version` replaces `labeling.ModelVersion.training_run`;
- `RunSample` (run → completion) replaces `labeling.Completion.sampling_run`;
- `RoundStep` (round, position, role, run) replaces `Round.reward_run`, `.ppo_run`, `.sample_runs`;

Schema, data and removal are three migrations (0003 adds, 0004 copies the rows while
labeling's old columns still exist, 0005 and labeling 0004 drop the old fields): PostgreSQL
refuses an ALTER TABLE on a table with pending foreign-key checks from rows written in the same
transaction.
"""

import django.db.models.deletion
from django.db import migrations, models


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
    ]
