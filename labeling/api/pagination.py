"""List endpoints' pagination: DRF's limit/offset, with a ceiling on `limit`."""

from __future__ import annotations

from django.conf import settings
from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` above settings.API_MAX_PAGE_SIZE gets that many rows (and a `next` link), so one
    request cannot ask the server to serialise a whole table."""

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE
