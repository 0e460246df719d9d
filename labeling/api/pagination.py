"""List endpoints' pagination: DRF's limit/offset, with a ceiling on `limit`, and a 400 for a
`limit` or `offset` that is not a whole number in range."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` above settings.API_MAX_PAGE_SIZE gets that many rows (and a `next` link), so one
    request cannot ask the server to serialise a whole table.

    DRF answers a malformed `?limit=` with its default page and a malformed `?offset=` with the
    first page: a script with a paging bug read page one again and again, believing it moved on.
    Here either is a 400 that says what it must be (schemathesis found it, issue 16)."""

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request: Request) -> int | None:
        _whole_number(request, self.limit_query_param, minimum=1)
        return super().get_limit(request)

    def get_offset(self, request: Request) -> int:
        _whole_number(request, self.offset_query_param, minimum=0)
        return super().get_offset(request)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        minimum = {self.limit_query_param: 1, self.offset_query_param: 0}
        for parameter in parameters:
            parameter["schema"]["minimum"] = minimum[parameter["name"]]
        return parameters


def _whole_number(request: Request, name: str, *, minimum: int) -> None:
    raw = request.query_params.get(name)
    if raw is None:
        return
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValidationError({name: [f"A whole number, {minimum} or more; not {raw!r}."]})
