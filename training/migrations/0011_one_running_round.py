"""At most one running round per project: a database rule (two 'Start round' presses at once)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('training', '0010_stop_duplicate_running_rounds'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='round',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'running')), fields=('project',), name='round_one_running_per_project'),
        ),
    ]
