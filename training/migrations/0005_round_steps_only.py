"""A round's runs are its steps now (copied by 0004): the three fixed links go."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("training", "0004_copy_links")]

    operations = [
        migrations.RemoveField(model_name="round", name="ppo_run"),
        migrations.RemoveField(model_name="round", name="reward_run"),
        migrations.RemoveField(model_name="round", name="sample_runs"),
        migrations.AlterField(
            model_name="trainingrun",
            name="config",
            field=models.JSONField(default=dict, help_text="The resolved config it runs with: every setting, defaults included (not the server-set paths)."),
        ),
    ]
