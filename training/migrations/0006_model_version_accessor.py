"""`ModelVersion.training_run` is the reverse accessor of `TrainingRun.model_version` again, now
that labeling 0004 dropped the old forward field of that name."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0004_links_moved_to_training"),
        ("training", "0005_round_steps_only"),
    ]

    operations = [
        migrations.AlterField(
            model_name="trainingrun",
            name="model_version",
            field=models.OneToOneField(
                blank=True,
                help_text="The version it registered: one run registers exactly one version.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="training_run",
                to="labeling.modelversion",
            ),
        ),
    ]
