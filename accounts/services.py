"""API tokens: issued, adopted, touched and revoked here, each write one statement.

A key is 256 random bits (`il_` + 43 URL-safe characters), shown once when issued; the database
keeps its SHA-256. A salted, slow hash protects guessable secrets such as passwords; a key has
nothing to guess, so a plain digest is as strong, and the labeler loop's one-statement lookup
(labeling/api/authentication.py) finds a token by the digest of the key it is given, through the
unique index. A leaked database then hands out no working key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from .models import ApiToken

KEY_PREFIX = "il_"
# last_used_at is written when it is this stale, not on every call: a write per API call would
# cost the labeler loop a statement and a commit each time.
LAST_USED_PRECISION = timedelta(hours=1)
MAX_LIFETIME_DAYS = 3650


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    key: str  # shown once; never stored


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_lifetime(days: int | None) -> timedelta | None:
    """A lifetime in days as asked (None: settings.API_TOKEN_DAYS); 0 days: never expires."""
    if days is None:
        days = settings.API_TOKEN_DAYS
    return timedelta(days=days) if days else None


def api_token_issue(
    *, user_id: int, name: str, now: datetime, lifetime: timedelta | None
) -> IssuedToken:
    """A new token for the user, expiring after `lifetime` (None: never)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user_id=user_id,
        name=name,
        digest=token_digest(key),
        prefix=key[:8],
        created_at=now,
        expires_at=None if lifetime is None else now + lifetime,
    )
    return IssuedToken(token=token, key=key)


def api_token_touch(*, token: ApiToken, now: datetime) -> None:
    """Note that the token was used, when its last note is older than LAST_USED_PRECISION."""
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_PRECISION:
        return
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now


def api_token_revoke(*, token_id: int, user_id: int) -> bool:
    """Revoke one of the user's tokens; False when they have no such token (someone else's)."""
    deleted, _ = ApiToken.objects.filter(pk=token_id, user_id=user_id).delete()
    return deleted > 0


def api_token_revoke_by_key(*, key: str) -> None:
    ApiToken.objects.filter(digest=token_digest(key)).delete()


def api_tokens_revoke_all(*, user_id: int) -> int:
    deleted, _ = ApiToken.objects.filter(user_id=user_id).delete()
    return deleted
