"""Existing DRF tokens (rest_framework.authtoken, the API's tokens until now) become ApiTokens:
same key, so scripts keep working, no expiry (they had none), and only the key's digest kept.
Their plain-text rows are then deleted from DRF's table."""

import hashlib

from django.db import migrations


def adopt(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("accounts", "ApiToken")
    for token in Token.objects.all():
        ApiToken.objects.get_or_create(
            digest=hashlib.sha256(token.key.encode()).hexdigest(),
            defaults={
                "user_id": token.user_id,
                "name": "authtoken",
                "prefix": token.key[:8],
                "created_at": token.created,
            },
        )
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(adopt, migrations.RunPython.noop)]
