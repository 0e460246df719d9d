"""/api/v1/auth/: tokens. Documented at /api/schema/ with the rest of the API."""

from django.urls import path

from . import api

app_name = "auth-api"

urlpatterns = [
    path("token/", api.TokenView.as_view(), name="token"),
    path("tokens/", api.TokenListView.as_view(), name="tokens"),
    path("tokens/<int:token_id>/", api.TokenDetailView.as_view(), name="token-detail"),
]
