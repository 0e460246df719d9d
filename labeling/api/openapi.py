"""The API's OpenAPI generator: drf-spectacular's, plus the answers that every endpoint of a kind
gives because of the stack it runs on, documented once here instead of on each view (and so on
endpoints added later too)."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework.permissions import IsAuthenticated

from .serializers import ErrorSerializer, InvalidInputSerializer

UNSAFE_METHODS = ("POST", "PUT", "PATCH")


def _error(description: str, serializer: type = ErrorSerializer) -> OpenApiResponse:
    return OpenApiResponse(serializer, description=description)


class AutoSchema(openapi.AutoSchema):
    """Adds, where the view does not say otherwise:

    - 400 on a paged list: a malformed `?limit=` or `?offset=` (labeling/api/pagination.py);
    - 404 where the path names something (a project, a lease, a run...): it does not exist, or
      is not yours (labeling/access.py); 403 inside a project: your role does not allow this;
    - 401 where a token or session is needed: none, an expired or a revoked one;
    - 413 and 415 where a body is read: over DATA_UPLOAD_MAX_MEMORY_SIZE (labeling/api/errors.py),
      or in a content type the endpoint does not parse;
    - 503 everywhere: the database cannot be reached; retry after Retry-After seconds.
    """

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        stack = {503: _error("The database is unavailable; retry after Retry-After seconds.")}
        if self._needs_login():
            stack[401] = _error("No token or session, or an expired or revoked token.")
        if self.method in UNSAFE_METHODS:
            stack[413] = _error("The request body is over the size limit.")
            stack[415] = _error("The body is in a content type this endpoint does not read.")
        path_parameters = set(re.findall(r"{(\w+)}", self.path))
        if path_parameters:
            stack[404] = _error("Not found, or not yours.")
        if "project_id" in path_parameters:
            stack[403] = _error("Your role in the project does not allow this.")
        if self.method == "GET" and self._get_paginator() is not None and self._is_list_view():
            stack[400] = _error("A malformed `limit` or `offset`.", InvalidInputSerializer)
        for code, response in stack.items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    response, str(code), direction=direction
                )
        return dict(sorted(responses.items()))

    def _needs_login(self) -> bool:
        return bool(self.view.get_authenticators()) and any(
            isinstance(permission, IsAuthenticated) for permission in self.view.get_permissions()
        )
