"""Who may read the API's OpenAPI schema (/api/schema/)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class SchemaAccess(BasePermission):
    """Anyone when settings.API_SCHEMA_PUBLIC (development's default), else signed-in users: the
    schema maps every path and field of the API, which an anonymous visitor of a production
    server has no need to read."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return settings.API_SCHEMA_PUBLIC or bool(request.user and request.user.is_authenticated)
