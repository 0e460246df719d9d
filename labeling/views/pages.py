"""Full pages for labelers, reviewers and admins. Thin: parse, one domain call, render.

Every page is scoped by labeling/access.py: membership_require (not a member → 404, lower role →
403) or the own-lease rule (someone else's lease → 404).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.invites import invite_link

from .. import access, queue, selectors, services
from ..errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from ..forms import (
    ComparisonForm,
    DemonstrationForm,
    GuidelinesForm,
    ImportForm,
    MemberAddForm,
    MemberInviteForm,
    ProjectForm,
    RankingFilterForm,
    RankingForm,
    RoleForm,
    SkipForm,
)
from ..imports import parse_prompts, parse_ranking_tasks
from ..markdown import render_markdown
from ..models import Role, Task

PAGE_SIZE = 25
IMPORT_KINDS = ("prompts", "rankings")


def page_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Log in first; a domain NotFound is a 404 page and Forbidden a 403 page."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None

    return wrapped


def forbidden(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 403 page: why, and the way back (the page it came from, when that is one of ours)."""
    referer = request.META.get("HTTP_REFERER", "")
    back = (
        referer
        if url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        else ""
    )
    return render(request, "403.html", {"exception": str(exception), "back": back}, status=403)


def _membership(request: HttpRequest, slug: str, role: str = Role.LABELER):
    return access.membership_require(user_id=request.user.pk, slug=slug, role=role)


def _error_page(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return render(request, "labeling/error.html", {"error": exc}, status=exc.status_code)


# --- labelers ------------------------------------------------------------------------------


@require_GET
@page_view
def home(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {
        "rows": selectors.home_rows(user_id=request.user.pk, now=now),
        "today": selectors.counts_today(user_id=request.user.pk, now=now),
    }
    return render(request, "labeling/home.html", context)


@require_GET
@page_view
def project_root(request: HttpRequest, slug: str) -> HttpResponse:
    """A project's own address (what ./dev up prints): each member to their place in it."""
    membership = _membership(request, slug)
    if membership.allows(Role.ADMIN):
        return redirect("project_admin", slug=slug)
    if membership.allows(Role.REVIEWER):
        return redirect("review", slug=slug)
    return redirect("home")


@require_http_methods(["GET", "POST"])
@page_view
def next_task(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    """POST claims the next task of `kind` and goes to it. GET claims nothing (a link opened,
    prefetched or reloaded must not take a task from the queue): it goes to the task of that
    kind the labeler holds, or offers the claim as a form (Enter), or says nothing is left."""
    if kind not in Task.Kind.values:
        raise Http404("No such task kind.")
    project = _membership(request, slug).project
    if request.method == "POST":
        return _claim(request, project, kind)
    ready = selectors.next_ready(
        user_id=request.user.pk, project=project, kind=kind, now=timezone.now()
    )
    if ready.held_lease_id is not None:
        return redirect("lease", lease_id=ready.held_lease_id)
    template = "labeling/next.html" if ready.waiting else "labeling/nothing_left.html"
    return render(request, template, {"project": project, "kind": kind, "ready": ready})


def _claim(request: HttpRequest, project, kind: str) -> HttpResponse:
    lease = queue.claim_next(
        user_id=request.user.pk, project=project, kind=kind, now=timezone.now()
    )
    if lease is None:
        return render(request, "labeling/nothing_left.html", {"project": project, "kind": kind})
    return redirect("lease", lease_id=lease.pk)


def _lease_context(page: selectors.LeasePage, form: Any, **extra: Any) -> dict[str, Any]:
    return {
        "page": page,
        "lease": page.lease,
        "project": page.project,
        "kind": page.lease.task.kind,
        "guidelines_html": render_markdown(page.project.guidelines),
        "form": form,
        "skip_form": SkipForm(),
        "expired": Conflict("Your lease on this task expired; reclaim it to go on.")
        if page.lease.expires_at <= timezone.now()
        else None,
        **extra,
    }


def _render_lease(
    request: HttpRequest, page: selectors.LeasePage, form: Any = None, status: int = 200, **kw
) -> HttpResponse:
    if page.lease.task.kind == Task.Kind.RANKING:
        form = form or RankingForm(page=page)
        template = "labeling/ranking.html"
    elif page.lease.task.kind == Task.Kind.COMPARISON:
        form = form or ComparisonForm()
        template = "labeling/comparison.html"
    else:
        form = form or DemonstrationForm(initial={"text": page.draft_text})
        template = "labeling/demonstration.html"
    return render(request, template, _lease_context(page, form, **kw), status=status)


@require_GET
@page_view
def lease_detail(request: HttpRequest, lease_id: int) -> HttpResponse:
    page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
    return _render_lease(request, page)


def _after_submit(request: HttpRequest, lease) -> HttpResponse:
    """Submit and next: the next task of the kind is claimed in the submit's POST (a GET of
    /next/ claims nothing) and opened; with none left, /next/ says so."""
    project, kind = lease.task.project, lease.task.kind
    claimed = queue.claim_next(
        user_id=request.user.pk, project=project, kind=kind, now=timezone.now()
    )
    if claimed is None:
        return redirect("next_task", slug=project.slug, kind=kind)
    return redirect("lease", lease_id=claimed.pk)


@require_POST
@page_view
def demonstration_submit(request: HttpRequest, lease_id: int) -> HttpResponse:
    form = DemonstrationForm(request.POST)
    if form.is_valid():
        try:
            demonstration, _ = services.demonstration_submit(
                lease_id=lease_id,
                user_id=request.user.pk,
                text=form.cleaned_data["text"],
                time_spent_ms=form.cleaned_data["time_spent_ms"],
                now=timezone.now(),
            )
        except (Invalid, Conflict) as exc:
            page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
            return _render_lease(request, page, form, status=exc.status_code, error=exc)
        return _after_submit(request, demonstration.lease)
    page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
    return _render_lease(request, page, form, status=400)


@require_POST
@page_view
def ranking_submit(request: HttpRequest, lease_id: int) -> HttpResponse:
    page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
    form = RankingForm(request.POST, page=page)
    if not form.is_valid():
        return _render_lease(request, page, form, status=400)
    try:
        services.ranking_submit(
            lease_id=lease_id,
            user_id=request.user.pk,
            entries=form.entries(),
            none_acceptable=form.cleaned_data["none_acceptable"],
            notes=form.cleaned_data["notes"],
            time_spent_ms=form.cleaned_data["time_spent_ms"],
            now=timezone.now(),
        )
    except (Invalid, Conflict) as exc:
        return _render_lease(request, page, form, status=exc.status_code, error=exc)
    return _after_submit(request, page.lease)


@require_POST
@page_view
def comparison_submit(request: HttpRequest, lease_id: int) -> HttpResponse:
    page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
    form = ComparisonForm(request.POST)
    if not form.is_valid():
        return _render_lease(request, page, form, status=400)
    try:
        services.comparison_submit(
            lease_id=lease_id,
            user_id=request.user.pk,
            winner=form.cleaned_data["winner"],
            notes=form.cleaned_data["notes"],
            time_spent_ms=form.cleaned_data["time_spent_ms"],
            now=timezone.now(),
        )
    except (Invalid, Conflict) as exc:
        return _render_lease(request, page, form, status=exc.status_code, error=exc)
    return _after_submit(request, page.lease)


@require_POST
@page_view
def lease_skip(request: HttpRequest, lease_id: int) -> HttpResponse:
    form = SkipForm(request.POST)
    if not form.is_valid():
        page = selectors.lease_page(lease_id=lease_id, user_id=request.user.pk)
        return _render_lease(request, page, status=400, skip_errors=True, skip_form=form)
    try:
        lease = queue.skip(
            lease_id=lease_id,
            user_id=request.user.pk,
            reason=form.reason_text(),
            now=timezone.now(),
        )
    except Conflict as exc:
        return _error_page(request, exc)
    return _after_submit(request, lease)


@require_POST
@page_view
def lease_reclaim(request: HttpRequest, lease_id: int) -> HttpResponse:
    try:
        lease = queue.reclaim(lease_id=lease_id, user_id=request.user.pk, now=timezone.now())
    except Conflict as exc:
        return _error_page(request, exc)
    return redirect("lease", lease_id=lease.pk)


# --- admins --------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@page_view
def project_new(request: HttpRequest) -> HttpResponse:
    if not access.can_create_project(user_id=request.user.pk, is_staff=request.user.is_staff):
        raise PermissionDenied("Only staff and project admins create projects.")
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(creator=request.user, **form.cleaned_data)
        except Invalid as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("project_admin", slug=project.slug)
    status = 400 if form.errors else 200
    return render(request, "labeling/project_new.html", {"form": form}, status=status)


@require_GET
@page_view
def project_admin(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    context = {"project": project, "progress": selectors.project_progress(project=project)}
    return render(request, "labeling/project_admin.html", context)


@require_http_methods(["GET", "POST"])
@page_view
def guidelines_edit(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    form = GuidelinesForm(request.POST or None, initial={"guidelines": project.guidelines})
    if request.method == "POST" and form.is_valid() and "preview" not in request.POST:
        try:
            services.project_update_guidelines(
                project=project, guidelines=form.cleaned_data["guidelines"]
            )
        except Invalid as exc:
            form.add_error("guidelines", exc.message)
        else:
            messages.success(request, "Guidelines saved.")
            return redirect("guidelines_edit", slug=project.slug)
    text = form.cleaned_data["guidelines"] if form.is_bound and form.is_valid() else None
    context = {
        "project": project,
        "form": form,
        "preview_html": render_markdown(project.guidelines if text is None else text),
    }
    template = "labeling/guidelines_edit.html"
    if request.htmx:
        template += "#preview"
    return render(request, template, context)


def _members_response(request: HttpRequest, project, **extra: Any) -> HttpResponse:
    context = {
        "project": project,
        "members": selectors.members_of(project=project),
        "add_form": extra.pop("add_form", None) or MemberAddForm(),
        "invite_form": extra.pop("invite_form", None) or MemberInviteForm(),
        "roles": Role.choices,
        **extra,
    }
    template = "labeling/members.html"
    if request.htmx:
        template += "#members"
    return render(request, template, context, status=400 if "error" in extra else 200)


@require_http_methods(["GET", "POST"])
@page_view
def members(request: HttpRequest, slug: str) -> HttpResponse:
    """GET lists members; POST adds an existing user by username with a role."""
    project = _membership(request, slug, Role.ADMIN).project
    if request.method == "GET":
        return _members_response(request, project)
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_response(request, project, add_form=form, error="Check the form.")
    try:
        services.member_add(project=project, **form.cleaned_data)
    except Invalid as exc:
        return _members_response(request, project, add_form=form, error=exc.message)
    return _members_response(
        request, project, notice=f"{form.cleaned_data['username']} is now a member."
    )


@require_POST
@page_view
def member_invite(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    form = MemberInviteForm(request.POST)
    if not form.is_valid():
        return _members_response(request, project, invite_form=form, error="Check the form.")
    try:
        membership = services.member_invite(project=project, **form.cleaned_data)
    except Invalid as exc:
        return _members_response(request, project, invite_form=form, error=exc.message)
    return _members_response(
        request,
        project,
        invited=membership.user,
        invite_link=invite_link(request, membership.user),
    )


@require_POST
@page_view
def member_role(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    form = RoleForm(request.POST)
    member = selectors.members_of(project=project).filter(user_id=user_id).first()
    if member is None:
        raise Http404("No such member.")
    if not form.is_valid():
        return _members_response(request, project, error="Unknown role.")
    try:
        services.membership_set(project=project, user=member.user, role=form.cleaned_data["role"])
    except Invalid as exc:
        return _members_response(request, project, error=exc.message)
    return _members_response(request, project, notice=f"{member.user.username}'s role changed.")


@require_POST
@page_view
def member_remove(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    try:
        services.membership_remove(project=project, user_id=user_id)
    except Invalid as exc:
        return _members_response(request, project, error=exc.message)
    return _members_response(request, project, notice="Member removed.")


@require_GET
@page_view
def imports(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.ADMIN).project
    return render(request, "labeling/imports.html", {"project": project, "form": ImportForm()})


def _uploaded(form: ImportForm) -> tuple[str, bytes]:
    upload = form.cleaned_data["file"]
    # Read one byte past the cap so the parser reports a 413 without reading a huge file.
    return upload.name, upload.read(settings.IMPORT_MAX_BYTES + 1)


@require_POST
@page_view
def import_file(request: HttpRequest, slug: str, what: str) -> HttpResponse:
    """POST a prompts (JSONL/CSV) or ranking-task (JSONL) file; all lines or none."""
    if what not in IMPORT_KINDS:
        raise Http404("No such import.")
    project = _membership(request, slug, Role.ADMIN).project
    form = ImportForm(request.POST, request.FILES)
    context: dict[str, Any] = {"project": project, "form": form, "what": what}
    if not form.is_valid():
        return render(request, "labeling/imports.html", context, status=400)
    filename, data = _uploaded(form)
    try:
        if what == "prompts":
            rows = parse_prompts(filename, data, max_bytes=settings.IMPORT_MAX_BYTES)
            result = services.prompts_import(project=project, rows=rows, source=filename)
        else:
            rows = parse_ranking_tasks(
                filename, data, k=project.k, max_bytes=settings.IMPORT_MAX_BYTES
            )
            result = services.ranking_tasks_import(project=project, rows=rows, source=filename)
    except DomainError as exc:
        context["error"] = exc
        return render(request, "labeling/imports.html", context, status=exc.status_code)
    context["result"] = result
    return render(request, "labeling/imports.html", context)


# --- reviewers -----------------------------------------------------------------------------


@require_GET
@page_view
def review(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.REVIEWER).project
    agreement = selectors.labeler_agreement(project=project)
    counts = selectors.labeler_counts(project=project, now=timezone.now(), agreement=agreement)
    names = {row["user_id"]: row["username"] for row in counts}
    pairs = [
        {"a": names.get(a, a), "b": names.get(b, b), "agreement": value,
         "comparisons": agreement["pair_comparisons"].get((a, b), 0)}
        for (a, b), value in sorted(agreement["pairs"].items())
    ]  # fmt: skip
    context = {"project": project, "counts": counts, "agreement": agreement, "pairs": pairs}
    return render(request, "labeling/review.html", context)


def _paginated(
    request: HttpRequest, template: str, project, queryset, **context: Any
) -> HttpResponse:
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    if request.htmx:
        template += "#rows"
    # The pager's links keep the list's filters.
    query = request.GET.copy()
    query.pop("page", None)
    context = {"project": project, "page_obj": page, "query": query.urlencode(), **context}
    return render(request, template, context)


@require_GET
@page_view
def review_demonstrations(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.REVIEWER).project
    return _paginated(
        request,
        "labeling/review_demonstrations.html",
        project,
        selectors.demonstrations_for_review(project=project),
    )


@require_GET
@page_view
def review_rankings(request: HttpRequest, slug: str) -> HttpResponse:
    project = _membership(request, slug, Role.REVIEWER).project
    form = RankingFilterForm(
        request.GET or None, **selectors.ranking_filter_choices(project=project)
    )
    filters = form.filters()
    return _paginated(
        request,
        "labeling/review_rankings.html",
        project,
        selectors.rankings_for_review(project=project, **filters),
        form=form,
        filtered=bool(filters),
    )
