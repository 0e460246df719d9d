from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from .services import MAX_LIFETIME_DAYS


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. a script's name.")
    expires_in_days = forms.IntegerField(
        min_value=0, max_value=MAX_LIFETIME_DAYS, help_text="0: never expires."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expires_in_days"].initial = settings.API_TOKEN_DAYS
