"""Pages of the training app: runs, rounds, model lineage, the evaluation dashboard."""

from django.urls import path

from . import views

urlpatterns = [
    path("p/<slug:slug>/runs/", views.run_list, name="run-list"),
    path("p/<slug:slug>/runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("p/<slug:slug>/runs/<int:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/runs/<int:run_id>/resume/", views.run_resume, name="run-resume"),
    path("p/<slug:slug>/rounds/", views.round_list, name="round-list"),
    path("p/<slug:slug>/rounds/<int:number>/", views.round_detail, name="round-detail"),
    path("p/<slug:slug>/rounds/<int:number>/cancel/", views.round_cancel, name="round-cancel"),
    path("p/<slug:slug>/models/", views.model_list, name="model-list"),
    path(
        "p/<slug:slug>/models/<int:version_id>/", views.model_version_detail, name="model-version"
    ),
    path("p/<slug:slug>/review/dashboard/", views.review_dashboard, name="review_dashboard"),
    path(
        "p/<slug:slug>/review/dashboard/recompute/",
        views.review_recompute,
        name="review_recompute",
    ),
]
