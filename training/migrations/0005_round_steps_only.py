"""A round's runs are its steps now (copied by 0004): the three fixed links go, and so does
the unused CANCELLED status."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("training", "0004_copy_links")]

    operations = [
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
