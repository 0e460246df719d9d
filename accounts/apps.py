from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who you are: API tokens, failed-login lockout, the schema's access rule."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
