"""The link an invited user sets their first password with (Django's password-reset confirm view,
so it expires with PASSWORD_RESET_TIMEOUT and dies once a password is set). Shared by the members
page and the API's invitation endpoint."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.tokens import default_token_generator
from django.http import HttpRequest
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode


def invite_link(request: HttpRequest, user: Any) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    path = reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": token})
    return request.build_absolute_uri(path)
