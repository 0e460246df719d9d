"""Token authentication in one hand-written query.

DRF's TokenAuthentication, with the lookup of the token and its user as one SQL statement
(statements.TOKEN_USER; labeling/sql/ says why): every call of the labeler loop pays for it. Same answers: an unknown
token or an inactive user is a 401 with DRF's messages.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from labeling import sql
from labeling.sql import statements


class SqlTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple:
        User = get_user_model()  # noqa: N806
        query = statements.TOKEN_USER.format(
            token=sql.columns(Token, "t"),
            user=sql.columns(User, "u"),
            token_table=Token._meta.db_table,
            user_table=User._meta.db_table,
        )
        row = sql.one(query, [key], name="il_token_user")
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        n = len(Token._meta.concrete_fields)
        token, user = sql.instance(Token, row[:n]), sql.instance(User, row[n:])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token
