"""Reads of accounts' data for pages and the API."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import ApiToken


def api_tokens_of(*, user_id: int) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first: nobody lists anyone else's."""
    return ApiToken.objects.filter(user_id=user_id).order_by("-created_at", "-pk")
