from django.contrib.auth import views as auth_views
from django.urls import path

from . import converters  # noqa: F401 - registers <id:...>
from .views import pages, partials

urlpatterns = [
    path("", pages.home, name="home"),
    # Labeling
    path("p/<slug:slug>/", pages.project_root, name="project_root"),
    path("p/<slug:slug>/next/<str:kind>/", pages.next_task, name="next_task"),
    path("leases/<id:lease_id>/", pages.lease_detail, name="lease"),
    path(
        "leases/<id:lease_id>/demonstration/",
        pages.demonstration_submit,
        name="demonstration_submit",
    ),
    path("leases/<id:lease_id>/ranking/", pages.ranking_submit, name="ranking_submit"),
    path("leases/<id:lease_id>/comparison/", pages.comparison_submit, name="comparison_submit"),
    path("leases/<id:lease_id>/skip/", pages.lease_skip, name="lease_skip"),
    path("leases/<id:lease_id>/reclaim/", pages.lease_reclaim, name="lease_reclaim"),
    path("leases/<id:lease_id>/heartbeat/", partials.heartbeat, name="lease_heartbeat"),
    path("leases/<id:lease_id>/draft/", partials.draft_save, name="draft_save"),
    path("preview/", partials.markdown_preview, name="markdown_preview"),
    # Admin
    path("projects/new/", pages.project_new, name="project_new"),
    path("p/<slug:slug>/admin/", pages.project_admin, name="project_admin"),
    path("p/<slug:slug>/admin/guidelines/", pages.guidelines_edit, name="guidelines_edit"),
    path("p/<slug:slug>/admin/members/", pages.members, name="members"),
    path("p/<slug:slug>/admin/members/invite/", pages.member_invite, name="member_invite"),
    path("p/<slug:slug>/admin/members/<id:user_id>/role/", pages.member_role, name="member_role"),
    path(
        "p/<slug:slug>/admin/members/<id:user_id>/remove/",
        pages.member_remove,
        name="member_remove",
    ),
    path("p/<slug:slug>/admin/import/", pages.imports, name="imports"),
    path(
        "p/<slug:slug>/admin/import/<str:what>/",
        pages.import_file,
        name="import_file",
    ),
    # Reviewers
    path("p/<slug:slug>/review/", pages.review, name="review"),
    path(
        "p/<slug:slug>/review/demonstrations/",
        pages.review_demonstrations,
        name="review_demonstrations",
    ),
    path("p/<slug:slug>/review/rankings/", pages.review_rankings, name="review_rankings"),
    # Invited users set their first password through Django's reset-confirm view.
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]
