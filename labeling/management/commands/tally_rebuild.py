"""Recount the progress counters of one project, or of all, from their rows:
`manage.py tally_rebuild [--project SLUG] [--check]`.

PostgreSQL's triggers keep the counters (labeling/tally.py); a bulk load run with triggers off
(`session_replication_role = replica`, as bench/scale.py does) leaves them behind. `--check`
only compares the counters with a count of the rows and exits 1 when they differ."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling import sql, tally
from labeling.models import Project


class Command(BaseCommand):
    help = "Recount the progress counters of a project (or every project) from its rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="The project's slug (default: every project).")
        parser.add_argument(
            "--check", action="store_true", help="Only compare; exit 1 if they differ."
        )

    def handle(self, *args: Any, project: str | None, check: bool, **options: Any) -> None:
        if not sql.postgres():
            self.stdout.write("SQLite keeps no counters: progress is counted on every read.")
            return
        projects = Project.objects.order_by("pk")
        if project is not None:
            projects = projects.filter(slug=project)
            if not projects.exists():
                raise CommandError(f"No project with the slug {project!r}.")
        differ = []
        for found in projects:
            kept = (tally.progress(project_id=found.pk), tally.labeler_totals(project_id=found.pk))
            counted = (
                tally.progress(project_id=found.pk, counted=True),
                tally.labeler_totals(project_id=found.pk, counted=True),
            )
            if kept != counted:
                differ.append(found.slug)
            if not check:
                tally.rebuild(project_id=found.pk)
        if check and differ:
            raise CommandError(
                f"Counters differ from the rows in: {', '.join(differ)}.", returncode=1
            )
        verb = "differed and were recounted" if differ and not check else "match their rows"
        names = ", ".join(differ) if differ else "every project checked"
        self.stdout.write(f"Counters {verb}: {names}.")
