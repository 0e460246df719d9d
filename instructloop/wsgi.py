"""The WSGI application gunicorn serves: pages with the full middleware stack, /api/v1/ lean.

The JSON API needs none of what pages need from middleware: static files (WhiteNoise), flash
messages, htmx request details, clickjacking headers on HTML, and the CSRF middleware (DRF checks
CSRF itself for session-authenticated API calls; token calls carry no cookie to forge). Skipping
them saves about 0.5 ms of CPU per request on this machine (bench/labeler_loop.py), a tenth of
the labeler loop's per-call cost. API_MIDDLEWARE in settings lists what the API keeps.
"""

import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instructloop.settings")

API_PREFIX = "/api/v1/"


class ApiWSGIHandler(WSGIHandler):
    """Django's handler with settings.API_MIDDLEWARE in place of settings.MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        from django.conf import settings
        from django.test.utils import override_settings

        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async)


class Application:
    def __init__(self) -> None:
        self.pages = get_wsgi_application()  # sets Django up
        self.api = ApiWSGIHandler()

    def __call__(self, environ: dict, start_response):  # noqa: ANN204
        handler = self.api if environ.get("PATH_INFO", "").startswith(API_PREFIX) else self.pages
        return handler(environ, start_response)


application = Application()
