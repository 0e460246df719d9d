"""The API's error answers, always JSON.

- exception_handler (DRF's EXCEPTION_HANDLER): domain errors become answers with their status and
  details; Django's request caps 413/400; a database that cannot be reached a 503.
- not_found (the project's handler404): an /api/ URL that no route matches (`/api/v1/leases/abc/`,
  an id beyond bigint) is a JSON 404 like every other refusal of the API; pages keep Django's.
- server_error (the project's handler500): what DRF does not catch (an error in a middleware, or
  outside any DRF view) on an /api/ path is JSON too, a 503 when the database cannot be reached;
  pages keep Django's HTML page. Django calls handler500 only with DEBUG off (with it on, the
  developer gets the traceback page).

A database outage is a 503 with Retry-After, not a 500: nothing is wrong with the request, and a
client (a labeler's script, the simulated crowd) should wait and retry it. Before, every call
answered Django's HTML 500 page during one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.errors import DomainError

API_PATH = "/api/"
RETRY_AFTER_SECONDS = 5
# Django's errors when the server is down, restarting or unreachable, a connection was cut, or a
# statement was cancelled by the server (a deadlock, a serialization failure: also worth a retry).
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
UNAVAILABLE = {"detail": "The database is unavailable; retry in a few seconds."}

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message}
        if exc.details:
            body["errors"] = exc.details
        return Response(body, status=exc.status_code)
    # Django's request caps (DATA_UPLOAD_MAX_MEMORY_SIZE, ..._NUMBER_FIELDS/FILES) fire while DRF
    # reads the body; answer them in JSON like any other refusal (BAD-INPUTS 11).
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "The request body is too large."}, status=413)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return Response({"detail": "The request has too many fields or files."}, status=400)
    if isinstance(exc, DATABASE_UNAVAILABLE):
        logger.warning("Database unavailable: %s", exc)
        return Response(UNAVAILABLE, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return drf_exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: JSON on API paths, Django's own page elsewhere. Before, a path that matched no
    route (a letter where an id goes) answered the HTML page on /api/ too (schemathesis found it,
    issue 16)."""
    if not request.path.startswith(API_PATH):
        return defaults.page_not_found(request, exception)
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON on API paths (503 with Retry-After when the database is unavailable),
    Django's own page elsewhere. Called while the exception is being handled."""
    if not request.path.startswith(API_PATH):
        return defaults.server_error(request)
    if isinstance(sys.exc_info()[1], DATABASE_UNAVAILABLE):
        return JsonResponse(
            UNAVAILABLE, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return JsonResponse({"detail": "Server error."}, status=500)
