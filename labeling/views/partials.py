"""htmx fragments for the task page: heartbeat, draft autosave and Markdown preview.

Each answers a fragment of the template that renders the full page (django-template-partials);
a request without HX-Request (JavaScript off) gets the full page or a redirect instead.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from .. import queue, services
from ..errors import Conflict, Invalid
from ..forms import MarkdownPreviewForm
from ..markdown import render_markdown
from .pages import page_view


@require_POST
@page_view
def heartbeat(request: HttpRequest, lease_id: int) -> HttpResponse:
    """Extend the lease; 409 with a "reclaim" fragment once it has expired."""
    if not request.htmx:
        return redirect("lease", lease_id=lease_id)
    context = {"lease_id": lease_id}
    try:
        lease = queue.heartbeat(lease_id=lease_id, user_id=request.user.pk, now=timezone.now())
    except Conflict as exc:
        context["conflict"] = exc
        return render(request, "labeling/_lease_status.html#heartbeat", context, status=409)
    context["lease"] = lease
    return render(request, "labeling/_lease_status.html#heartbeat", context)


@require_POST
@page_view
def draft_save(request: HttpRequest, lease_id: int) -> HttpResponse:
    text = request.POST.get("text", "")
    context: dict = {"lease_id": lease_id}
    status = 200
    try:
        services.demonstration_draft_save(
            lease_id=lease_id, user_id=request.user.pk, text=text, now=timezone.now()
        )
        context["saved_at"] = timezone.now()
    except Conflict as exc:
        context["conflict"], status = exc, 409
    except Invalid as exc:
        context["invalid"], status = exc, 400
    if not request.htmx:
        return redirect("lease", lease_id=lease_id)
    return render(request, "labeling/_lease_status.html#draft", context, status=status)


@require_POST
@page_view
def markdown_preview(request: HttpRequest) -> HttpResponse:
    """Sanitised Markdown of the posted text: a fragment for htmx, a page without JavaScript."""
    form = MarkdownPreviewForm(request.POST)
    html = render_markdown(form.cleaned_data["text"]) if form.is_valid() else ""
    template = "labeling/preview.html"
    if request.htmx:
        template += "#preview"
    return render(request, template, {"preview_html": html, "form": form})
