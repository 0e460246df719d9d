from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from labeling.views import runs as run_views

urlpatterns = [
    path("api/v1/", include("labeling.api.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("p/<slug:slug>/runs/", run_views.run_list, name="run-list"),
    path("p/<slug:slug>/runs/<int:run_id>/", run_views.run_detail, name="run-detail"),
    path("p/<slug:slug>/runs/<int:run_id>/cancel/", run_views.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/rounds/", run_views.round_list, name="round-list"),
    path("p/<slug:slug>/rounds/<int:number>/", run_views.round_detail, name="round-detail"),
    path(
        "p/<slug:slug>/models/<int:version_id>/",
        run_views.model_version_detail,
        name="model-version",
    ),
    path("", include("labeling.urls")),
]
