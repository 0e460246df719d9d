"""Writes that span models. Each public function owns its transaction; views and tasks call one.

Keyword-only, typed, named <entity>_<verb>. The clock is passed in (`now`), never read here.
Split by topic: projects.py (projects and members), prompts.py (imports, splits, ranking and A/B
tasks), submits.py (a labeler's submits under a lease). Every public name is here too, so callers
write `services.ranking_submit(...)`.
"""

from .projects import (
    member_add,
    member_invite,
    membership_remove,
    membership_set,
    project_create,
    project_lock,
    project_update,
    project_update_guidelines,
)
from .prompts import (
    EvaluationTasks,
    ImportResult,
    comparison_task_create,
    completions_create,
    evaluation_tasks_create,
    evaluation_tasks_make,
    model_version_for_name,
    prompts_import,
    ranking_task_create,
    ranking_tasks_import,
    split_for,
)
from .submits import (
    MAX_NOTES_CHARS,
    MAX_TIME_SPENT_MS,
    comparison_submit,
    demonstration_draft_save,
    demonstration_submit,
    ranking_contradictions,
    ranking_submit,
)

__all__ = [
    "MAX_NOTES_CHARS",
    "MAX_TIME_SPENT_MS",
    "EvaluationTasks",
    "ImportResult",
    "comparison_submit",
    "comparison_task_create",
    "completions_create",
    "demonstration_draft_save",
    "demonstration_submit",
    "evaluation_tasks_create",
    "evaluation_tasks_make",
    "member_add",
    "member_invite",
    "membership_remove",
    "membership_set",
    "model_version_for_name",
    "project_create",
    "project_lock",
    "project_update",
    "project_update_guidelines",
    "prompts_import",
    "ranking_contradictions",
    "ranking_submit",
    "ranking_task_create",
    "ranking_tasks_import",
    "split_for",
]
