"""Your API tokens in the browser: list, issue (the key shown once), revoke. One template serves
the full page and, for htmx, its #tokens fragment."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from . import selectors, services
from .forms import TokenForm


def _tokens_response(request: HttpRequest, **extra: Any) -> HttpResponse:
    context = {
        "tokens": selectors.api_tokens_of(user_id=request.user.pk),
        "form": extra.pop("form", None) or TokenForm(),
        "now": timezone.now(),
        **extra,
    }
    template = "accounts/tokens.html"
    if request.htmx:
        template += "#tokens"
    return render(request, template, context, status=400 if "error" in extra else 200)


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """GET lists your tokens; POST issues one and shows its key, this once."""
    if request.method == "GET":
        return _tokens_response(request)
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _tokens_response(request, form=form, error="Check the form.")
    issued = services.api_token_issue(
        user_id=request.user.pk,
        name=form.cleaned_data["name"],
        now=timezone.now(),
        lifetime=services.token_lifetime(form.cleaned_data["expires_in_days"]),
    )
    return _tokens_response(request, issued=issued)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    if not services.api_token_revoke(token_id=token_id, user_id=request.user.pk):
        raise Http404("No such token.")
    return _tokens_response(request, notice="Token revoked: it no longer works.")
