"""DRF's Token model, kept working for code that still makes tokens with it.

training's simulate_labelers and bench/labeler_loop.py create `rest_framework.authtoken` tokens
with the ORM and expect the key to authenticate. Every such token is adopted as an ApiToken
(digest only, no expiry) when it is saved, and revoked when it is deleted. Their keys stay in
DRF's table in plain text, as before; tokens issued through accounts.services never are.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from . import services


def _adopt(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        services.api_token_adopt(
            user_id=instance.user_id,
            key=instance.key,
            name="authtoken",
            created_at=instance.created,
        )


def _revoke(sender: Any, instance: Any, **kwargs: Any) -> None:
    services.api_token_revoke_by_key(key=instance.key)


def connect() -> None:
    from rest_framework.authtoken.models import Token

    post_save.connect(_adopt, sender=Token, dispatch_uid="accounts-adopt-drf-token")
    post_delete.connect(_revoke, sender=Token, dispatch_uid="accounts-revoke-drf-token")
