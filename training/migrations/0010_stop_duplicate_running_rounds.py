"""Before one running round per project becomes a rule (0011): stop all but the newest.

In a migration of its own: PostgreSQL refuses some schema changes on a table with row changes
of the same transaction still pending.
"""

from django.db import migrations


def stop_all_but_the_newest_running_round(apps, schema_editor):
    """Two running rounds in one project could only come from the race this rule closes: the
    older ones are stopped, saying why (their runs and models stay)."""
    Round = apps.get_model("training", "Round")
    running = Round.objects.filter(status="running").order_by("project_id", "-number")
    seen = set()
    for round_ in running:
        if round_.project_id in seen:
            round_.status = "failed"
            round_.error = "Stopped by an upgrade: another round of this project was running."
            round_.save(update_fields=["status", "error"])
        seen.add(round_.project_id)


class Migration(migrations.Migration):
    dependencies = [("training", "0009_run_dispatch")]

    operations = [
        migrations.RunPython(stop_all_but_the_newest_running_round, migrations.RunPython.noop)
    ]
