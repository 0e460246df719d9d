from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("training", "0014_review_snapshot")]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="ran_on",
            field=models.CharField(
                blank=True,
                max_length=200,
                help_text="The worker (host:pid:task) that took its last attempt; kept once it finished.",
            ),
        ),
        migrations.AddField(
            model_name="trainingrun",
            name="queue",
            field=models.CharField(
                blank=True,
                max_length=64,
                help_text="The GPU queue it is sent to (one per GPU type); blank: the default one.",
            ),
        ),
    ]
