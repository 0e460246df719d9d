"""/api/v1/ routes of the training app (documented at /api/schema/ with labeling's)."""

from django.urls import path

from labeling import converters  # noqa: F401 - registers <id:...>

from . import api

app_name = "training-api"

project = "projects/<id:project_id>/"

urlpatterns = [
    path(f"{project}models/", api.ModelVersionListView.as_view(), name="models"),
    path(f"{project}models/<id:version_id>/", api.ModelVersionDetailView.as_view(), name="model"),
    path(
        f"{project}models/<id:version_id>/completions/",
        api.ModelCompletionListView.as_view(),
        name="model-completions",
    ),
    path(f"{project}evaluation/", api.EvaluationView.as_view(), name="evaluation"),
    path(
        f"{project}evaluation/refresh/",
        api.EvaluationRefreshView.as_view(),
        name="evaluation-refresh",
    ),
    path(f"{project}evaluation-tasks/", api.EvaluationTasksView.as_view(), name="evaluation-tasks"),
    path(f"{project}runs/", api.RunListView.as_view(), name="runs"),
    path(f"{project}runs/<id:run_id>/", api.RunDetailView.as_view(), name="run"),
    path(f"{project}runs/<id:run_id>/cancel/", api.RunCancelView.as_view(), name="run-cancel"),
    path(f"{project}runs/<id:run_id>/resume/", api.RunResumeView.as_view(), name="run-resume"),
    path(f"{project}rounds/", api.RoundListView.as_view(), name="rounds"),
    path(f"{project}rounds/<id:number>/", api.RoundDetailView.as_view(), name="round"),
    path(
        f"{project}rounds/<id:number>/cancel/", api.RoundCancelView.as_view(), name="round-cancel"
    ),
    path(
        f"{project}model-registrations/",
        api.RegistrationListView.as_view(),
        name="registrations",
    ),
    path(
        f"{project}model-registrations/<id:registration_id>/",
        api.RegistrationDetailView.as_view(),
        name="registration",
    ),
]
