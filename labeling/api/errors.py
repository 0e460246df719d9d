"""DRF exception handler: domain errors become JSON answers with their status and details."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.errors import DomainError


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
    return drf_exception_handler(exc, context)
