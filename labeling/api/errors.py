"""DRF exception handler: domain errors become JSON answers with their status and details."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": exc.message}
        if exc.details:
            body["errors"] = exc.details
        return Response(body, status=exc.status_code)
    return drf_exception_handler(exc, context)
