"""Reads for pages and the API, split by topic: projects.py, work.py (a labeler's home, today's
counts, the task page and the API's task payload), review.py (progress, labelers, agreement,
submitted work) and evaluation.py (the evaluation dashboard, moving to the training app).

Every public name is here too, so callers write `selectors.lease_page(...)`. Who may see what is
decided in labeling/access.py; membership_require is named here only for labeling/views/runs.py,
until that file moves to the training app.
"""

from ..access import membership_require
from .evaluation import (
    Dashboard,
    comparison_records,
    evaluation_dashboard,
    rating_rows,
    reward_model_accuracies,
)
from .projects import members_of, memberships_for_user
from .review import (
    demonstrations_for_review,
    demonstrations_visible,
    labeler_agreement,
    labeler_counts,
    project_progress,
    rankings_for_review,
    rankings_visible,
)
from .work import (
    FLAG_LABELS,
    HomeRow,
    LeasePage,
    ShownCompletion,
    counts_today,
    home_rows,
    iso_datetime,
    lease_page,
    lease_task,
    shown_completions,
)

__all__ = [
    "FLAG_LABELS",
    "Dashboard",
    "HomeRow",
    "LeasePage",
    "ShownCompletion",
    "comparison_records",
    "counts_today",
    "demonstrations_for_review",
    "demonstrations_visible",
    "evaluation_dashboard",
    "home_rows",
    "iso_datetime",
    "labeler_agreement",
    "labeler_counts",
    "lease_page",
    "lease_task",
    "members_of",
    "membership_require",
    "memberships_for_user",
    "project_progress",
    "rankings_for_review",
    "rankings_visible",
    "rating_rows",
    "reward_model_accuracies",
    "shown_completions",
]
