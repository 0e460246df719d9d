from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from accounts.permissions import SchemaAccess


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers and tools ask for /favicon.ico whatever the page links: the static file."""
    return HttpResponseRedirect(static("favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("api/v1/auth/", include("accounts.api_urls")),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("training.api_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", include("accounts.urls")),
    path("django-admin/", admin.site.urls),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[SchemaAccess]),
        name="api-schema",
    ),
    path("", include("training.urls")),
    path("", include("labeling.urls")),
]

# JSON on /api/ paths for a URL no route matches (404) and for what DRF does not catch (a
# database outage met in a middleware: 503). A page's 403 is our page with the way back.
handler403 = "labeling.views.pages.forbidden"
handler404 = "labeling.api.errors.not_found"
handler500 = "labeling.api.errors.server_error"
