"""Token authentication in one hand-written query.

The token (accounts.ApiToken) is found by the SHA-256 of the key sent, with its user, in one SQL
statement (statements.TOKEN_USER; labeling/sql/ says why): every call of the labeler loop pays
for it. An unknown, revoked or expired token, or an inactive user, is a 401. Marking the token
used is a second statement about once an hour per token (accounts.services.LAST_USED_PRECISION),
not once per call.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts import services as accounts
from accounts.models import ApiToken
from labeling import sql
from labeling.sql import statements


class SqlTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple:
        User = get_user_model()  # noqa: N806
        query = statements.TOKEN_USER.format(
            token=sql.columns(ApiToken, "t"),
            user=sql.columns(User, "u"),
            token_table=ApiToken._meta.db_table,
            user_table=User._meta.db_table,
        )
        row = sql.one(query, [accounts.token_digest(key)], name="il_token_user")
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        n = len(ApiToken._meta.concrete_fields)
        token, user = sql.instance(ApiToken, row[:n]), sql.instance(User, row[n:])
        now = timezone.now()
        if token.expired(now):
            raise exceptions.AuthenticationFailed(_("Token expired."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        accounts.api_token_touch(token=token, now=now)
        token.user = user
        return user, token
