"""A run kind: DPO (training/stages.py, training/engine/dpo.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('training', '0007_run_base_model_required'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='trainingrun',
            name='run_kind_valid',
        ),
        migrations.AlterField(
            model_name='trainingrun',
            name='kind',
            field=models.CharField(choices=[('sft', 'Supervised fine-tuning'), ('reward', 'Reward model'), ('ppo', 'PPO'), ('sample', 'Sampling'), ('dpo', 'DPO (from rankings, no reward model)')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='trainingrun',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['sft', 'reward', 'ppo', 'sample', 'dpo'])), name='run_kind_valid'),
        ),
    ]
