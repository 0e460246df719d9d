"""Reads for pages and the API, split by topic: projects.py, work.py (a labeler's home, today's
counts, the task page and the API's task payload), review.py (progress, labelers, agreement,
submitted work). The evaluation dashboard is the training app's (training/selectors.py).

Every public name is here too, so callers write `selectors.lease_page(...)`. Who may see what is
decided in labeling/access.py.
"""

from .projects import members_of, memberships_for_user
from .review import (
    comparisons_for_review,
    demonstrations_for_review,
    demonstrations_visible,
    labeler_agreement,
    labeler_counts,
    project_progress,
    ranking_filter_choices,
    rankings_for_review,
    rankings_visible,
    tasks_for_review,
)
from .work import (
    FLAG_LABELS,
    HomeRow,
    LeasePage,
    NextReady,
    ShownCompletion,
    counts_today,
    home_rows,
    iso_datetime,
    lease_page,
    lease_task,
    next_ready,
    shown_completions,
)

__all__ = [
    "FLAG_LABELS",
    "HomeRow",
    "LeasePage",
    "NextReady",
    "ShownCompletion",
    "comparisons_for_review",
    "counts_today",
    "demonstrations_for_review",
    "demonstrations_visible",
    "home_rows",
    "iso_datetime",
    "labeler_agreement",
    "labeler_counts",
    "lease_page",
    "lease_task",
    "next_ready",
    "members_of",
    "memberships_for_user",
    "project_progress",
    "ranking_filter_choices",
    "rankings_for_review",
    "rankings_visible",
    "shown_completions",
    "tasks_for_review",
]
