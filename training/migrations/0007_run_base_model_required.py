"""Every run starts from a model version (run_start always set one): now a database rule."""

import django.db.models.deletion
from django.db import migrations, models


def refuse_runs_without_a_base_model(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    orphans = list(TrainingRun.objects.filter(base_model__isnull=True).values_list("pk", flat=True))
    if orphans:
        raise RuntimeError(
            f"Training runs {orphans[:20]} have no base model (written by hand: run_start always"
            " sets one). Give each its model version, or delete them, then migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0004_links_moved_to_training"),
        ("training", "0006_model_version_accessor"),
    ]

    operations = [
        migrations.RunPython(refuse_runs_without_a_base_model, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="trainingrun",
            name="base_model",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="labeling.modelversion",
            ),
        ),
    ]
