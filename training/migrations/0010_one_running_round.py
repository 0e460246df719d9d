"""At most one running round per project: a database rule (two 'Start round' presses at once)."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0005_policy_label'),
        ('training', '0009_run_dispatch'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='round',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'running')), fields=('project',), name='round_one_running_per_project'),
        ),
    ]
