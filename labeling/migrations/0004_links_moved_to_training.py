"""labeling no longer points into training: the run a model version came from and the run that
sampled a completion are stored by the training app now (its migration 0004 copied the rows)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0003_comparison"),
        # The rows are copied before the columns go; after this, labeling depends on nothing of
        # training's.
        ("training", "0004_copy_links"),
    ]

    operations = [
        migrations.RemoveField(model_name="completion", name="sampling_run"),
        migrations.RemoveField(model_name="modelversion", name="training_run"),
    ]
