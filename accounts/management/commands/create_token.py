"""Issue an API token for a user and print its key: `manage.py create_token alice
[--name NAME] [--expires-in-days N] [--rotate]`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts import services


class Command(BaseCommand):
    help = (
        "Issue a new API token for a user and print its key (only a digest is stored, so a key"
        " is printed once); --rotate revokes the user's other tokens first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="create_token", help="What the token is for.")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="Days until it expires; 0: never (default: INSTRUCTLOOP_TOKEN_DAYS).",
        )
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the user's other tokens first."
        )

    def handle(
        self,
        *args: Any,
        username: str,
        name: str,
        expires_in_days: int | None,
        rotate: bool,
        **options: Any,
    ) -> None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        if expires_in_days is not None and not 0 <= expires_in_days <= services.MAX_LIFETIME_DAYS:
            raise CommandError(f"--expires-in-days must be 0 to {services.MAX_LIFETIME_DAYS}.")
        with transaction.atomic():
            if rotate:
                services.api_tokens_revoke_all(user_id=user.pk)
            issued = services.api_token_issue(
                user_id=user.pk,
                name=name,
                now=timezone.now(),
                lifetime=services.token_lifetime(expires_in_days),
            )
        self.stdout.write(issued.key)
