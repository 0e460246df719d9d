"""API tokens in and out of the JSON API."""

from __future__ import annotations

from rest_framework import serializers

from .models import ApiToken
from .services import MAX_LIFETIME_DAYS

LIFETIME_HELP = (
    "Days until the token expires; 0: never. Omitted: the server's default"
    " (INSTRUCTLOOP_TOKEN_DAYS)."
)


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, style={"input_type": "password"})
    name = serializers.CharField(max_length=100, default="api", help_text="What it is for.")
    expires_in_days = serializers.IntegerField(
        min_value=0, max_value=MAX_LIFETIME_DAYS, required=False, help_text=LIFETIME_HELP
    )


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at"]
        read_only_fields = fields


class IssuedTokenSerializer(ApiTokenSerializer):
    """A new token with its key (the only time the key is shown)."""

    token = serializers.CharField(
        help_text="The key: send it as `Authorization: Token <key>`. Shown this once; only a"
        " digest of it is stored."
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = ["token", *ApiTokenSerializer.Meta.fields]
        read_only_fields = fields
