from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("training", "0015_run_queue_ran_on")]

    operations = [
        migrations.AddField(
            model_name="round",
            name="queue",
            field=models.CharField(
                blank=True,
                max_length=64,
                help_text="The GPU queue every step's run is sent to (one per GPU type); blank:"
                " the default one.",
            ),
        ),
    ]
