"""Progress and per-labeler totals: read from counters the database keeps, or counted.

At 10^6 tasks, counting a project's tasks and joining every submitted lease to its task took the
progress page 19-26 s (issue 15). On PostgreSQL triggers keep two small tables
(models.TaskTally, models.LabelerTally; migration labeling 0010) and these reads sum at most a
few hundred rows. SQLite, the embedded default for small installs, keeps no counters and counts;
the counting statements are also the plain path the parity tests hold the counters to
(tests/labeling/test_tally.py). `rebuild` recounts a project's counters from its rows, for a bulk
load that ran with triggers off (bench/scale.py) or a repair.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from . import sql
from .models import TaskKind
from .sql import statements

Progress = dict[str, dict[str, int]]


def progress(*, project_id: int, counted: bool = False) -> Progress:
    """Per task kind: tasks, done, submissions collected and submissions wanted."""
    query = (
        statements.PROGRESS_COUNTED
        if counted or not sql.postgres()
        else statements.PROGRESS_TALLIED
    )
    out = {kind: {"tasks": 0, "done": 0, "submitted": 0, "wanted": 0} for kind in TaskKind.values}
    for kind, tasks, done, wanted, submitted in sql.rows(query, [project_id, project_id]):
        row = out[kind]
        row["tasks"] += int(tasks or 0)
        row["done"] += int(done or 0)
        row["wanted"] += int(wanted or 0)
        row["submitted"] += int(submitted or 0)
    return out


def labeler_totals(*, project_id: int, counted: bool = False) -> dict[int, dict[str, int]]:
    """Per labeler: leases submitted per task kind, and skipped (all kinds)."""
    query = (
        statements.LABELER_COUNTED if counted or not sql.postgres() else statements.LABELER_TALLIED
    )
    out: dict[int, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys([*TaskKind.values, "skipped"], 0)
    )
    for user_id, kind, submitted, skipped in sql.rows(query, [project_id]):
        out[user_id][kind] += int(submitted)
        out[user_id]["skipped"] += int(skipped)
    return dict(out)


def rebuild(*, project_id: int) -> None:
    """Recount the project's counters from its tasks and leases (PostgreSQL; SQLite has none)."""
    if not sql.postgres():
        return
    with transaction.atomic():
        # Whoever changes the project's tasks or leases meanwhile waits: the recount and the
        # triggers must not both count one change.
        sql.run("LOCK TABLE labeling_task, labeling_lease IN SHARE MODE")
        sql.run(statements.TALLY_DELETE, [project_id, project_id])
        sql.run(statements.TASK_TALLY_REBUILD, [project_id])
        sql.run(statements.LABELER_TALLY_REBUILD, [project_id])
