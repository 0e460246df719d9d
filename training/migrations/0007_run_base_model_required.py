"""Every run starts from a model version (run_start always set one): now a database rule."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0004_links_moved_to_training"),
        ("training", "0006_model_version_accessor"),
    ]

    operations = [
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
