"""django-axes' hooks: whose address a login comes from, and what a locked-out login gets.

Settings hold the rule (AXES_*: failures per address and per account, the cool-off). A locked-out
page login (the login page, Django's admin login) gets a 429 page; the API's token endpoint
answers its own 429 in JSON (accounts/api.py). Both say Retry-After: the seconds until the
newest counted failure is older than the cool-off, when the lock has certainly lifted. Every
refused try is logged here; axes logs each failure and the moment a lock starts.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username
from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

log = logging.getLogger(__name__)


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind settings.TRUSTED_PROXIES proxies that each
    append to X-Forwarded-For, the entry the outermost of them added (anything further left came
    from the client and proves nothing). A header too short or not an address: REMOTE_ADDR."""
    remote = _ip(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.TRUSTED_PROXIES
    if not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(forwarded) < proxies:
        return remote
    return _ip(forwarded[-proxies]) or remote


def retry_after_seconds(request: Any, credentials: dict | None) -> int:
    """Seconds until every failure that counts against this address or account has aged past
    the cool-off (tries during a lockout are not counted, so this does not move)."""
    handler = AxesProxyHandler.get_implementation()
    latest = [
        when
        for attempts in handler.get_user_attempts(request, credentials)
        if (when := attempts.aggregate(latest=Max("attempt_time"))["latest"]) is not None
    ]
    if not latest:
        return 1
    left = (max(latest) + settings.AXES_COOLOFF_TIME - timezone.now()).total_seconds()
    return max(1, math.ceil(left))


def login_refused(request: Any, credentials: dict | None, *, surface: str) -> int:
    """Log a login refused for a lockout; the seconds to wait."""
    seconds = retry_after_seconds(request, credentials)
    log.warning(
        "Login refused, locked out after repeated failures: surface=%s account=%r address=%s"
        " retry_after=%ds",
        surface,
        get_client_username(request, credentials),
        getattr(request, "axes_ip_address", None),
        seconds,
    )
    return seconds


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the page a locked-out login gets, 429 with Retry-After."""
    surface = "django-admin" if request.path.startswith("/django-admin/") else "login page"
    seconds = login_refused(request, credentials, surface=surface)
    response = render(
        request,
        "registration/locked_out.html",
        {"minutes": math.ceil(seconds / 60), "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
