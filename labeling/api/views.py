"""The JSON API (/api/v1/): everything a labeler does in the browser and an admin does with data.

Each view checks the caller's membership (not a member → 404, lower role → 403), parses the body
with a serializer, makes one queue/service/selector call and returns. Domain errors become HTTP
answers in labeling/api/errors.py.

Who may do what:
- any member (labeler and up): read the project, claim tasks, work their own leases, list their
  own demonstrations and rankings;
- reviewer and up: exports, progress, agreement, per-labeler counts, everybody's submissions and
  blind comparisons;
- admin: edit guidelines, import prompts and ranking tasks, manage members;
- staff users (Django `is_staff`) and anyone who already administers a project create projects
  and become their first admin (access.can_create_project, the rule the page follows too).
"""

from __future__ import annotations

import json
from typing import Any

from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import generics, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.invites import invite_link
from labeling import access, exports, queue, selectors, services
from labeling.errors import Invalid
from labeling.models import (
    Comparison,
    Demonstration,
    Membership,
    Ranking,
    Role,
    Split,
    Task,
    TaskKind,
)

from . import fast
from . import serializers as s
from .formats import JSONParser, JSONRenderer

ERRORS = {
    400: OpenApiResponse(s.InvalidInputSerializer, description="Invalid input."),
    403: OpenApiResponse(s.ErrorSerializer, description="Your role does not allow this."),
    404: OpenApiResponse(s.ErrorSerializer, description="Not found, or not yours."),
}
LEASE_ERRORS = {
    **ERRORS,
    409: OpenApiResponse(s.ErrorSerializer, description="The lease expired or was closed."),
}


class NDJSONRenderer(BaseRenderer):
    """Lets a client ask for exports with `Accept: application/x-ndjson` (errors stay JSON)."""

    media_type = "application/x-ndjson"
    format = "jsonl"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return (json.dumps(data, ensure_ascii=False) + "\n").encode()


class ParquetRenderer(BaseRenderer):
    """Lets a client ask for an export as a Parquet file, with `?format=parquet` or its Accept
    type (IANA's, 2024). The view streams the file itself; what reaches a renderer is an error,
    which ExportView answers in JSON."""

    media_type = "application/vnd.apache.parquet"
    format = "parquet"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return JSONRenderer().render(data)


class CreatesProjects(BasePermission):
    message = "Only staff and project admins create projects."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in SAFE_METHODS or access.can_create_project(
            user_id=request.user.pk, is_staff=request.user.is_staff
        )


class ApiView(APIView):
    # JSON bodies only. DRF parses JSON from `request.body`, so DATA_UPLOAD_MAX_MEMORY_SIZE caps
    # them before any parsing; errors.py answers that with a 413 (BAD-INPUTS 11).
    parser_classes = [JSONParser]


class JsonAnswers(BaseContentNegotiation):
    """JSON whatever the Accept header says, as DRF's docs show for APIs with one format: the
    labeler loop's calls skip parsing Accept and the query string on every request."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: list, format_suffix=None) -> tuple:
        return renderers[0], renderers[0].media_type


class QueueView(ApiView):
    """The labeler loop's endpoints: JSON in, JSON out."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonAnswers


def _member(request: Request, project_id: int, role: str = Role.LABELER) -> Membership:
    return access.membership_require(user_id=request.user.pk, project_id=project_id, role=role)


def _own_lease(request: Request, lease_id: int) -> None:
    """Someone else's lease is a 404 before anything about the body is said."""
    access.lease_require(lease_id=lease_id, user_id=request.user.pk)


def _valid(serializer_class: type, request: Request, **context: Any) -> dict[str, Any]:
    serializer = serializer_class(data=request.data, context={"request": request, **context})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _valid_for_lease(serializer_class: type, request: Request, lease_id: int) -> dict[str, Any]:
    """The body for a lease action. A bad body on someone else's lease is still a 404 (nothing
    about the lease is revealed); a good body goes to the service, which 404s foreign leases
    itself, so the happy path pays for no extra lookup."""
    serializer = serializer_class(data=request.data, context={"request": request})
    if not serializer.is_valid():
        _own_lease(request, lease_id)
        serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- projects and members -------------------------------------------------------------------


class ProjectListView(generics.ListAPIView):
    serializer_class = s.ProjectSerializer
    permission_classes = [IsAuthenticated, CreatesProjects]
    parser_classes = [JSONParser]
    queryset = Membership.objects.none()  # for schema generation; the real one is per user

    def get_queryset(self):
        return selectors.memberships_for_user(user_id=self.request.user.pk)

    @extend_schema(tags=["projects"], summary="My projects, each with my role")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["projects"],
        request=s.ProjectCreateSerializer,
        responses={201: s.ProjectSerializer, 400: ERRORS[400], 403: ERRORS[403]},
        summary="Create a project (staff and project admins); the creator becomes its admin",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.ProjectCreateSerializer, request)
        project = services.project_create(creator=request.user, **data)
        body = s.ProjectSerializer({"project": project, "role": Role.ADMIN}).data
        return Response(body, status=status.HTTP_201_CREATED)


class ProjectDetailView(ApiView):
    @extend_schema(tags=["projects"], responses={200: s.ProjectSerializer, 404: ERRORS[404]})
    def get(self, request: Request, project_id: int) -> Response:
        return Response(s.ProjectSerializer(_member(request, project_id)).data)

    @extend_schema(
        tags=["projects"],
        request=s.ProjectUpdateSerializer,
        responses={200: s.ProjectSerializer, **ERRORS},
        summary="Change the guidelines or settings (admin); only the fields sent change",
    )
    def patch(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        data = _valid(s.ProjectUpdateSerializer, request)
        services.project_update(project=membership.project, changes=data)
        return Response(s.ProjectSerializer(membership).data)


class MemberListView(generics.ListAPIView):
    serializer_class = s.MemberSerializer
    parser_classes = [JSONParser]
    queryset = Membership.objects.none()

    def get_queryset(self):
        membership = _member(self.request, self.kwargs["project_id"], Role.ADMIN)
        return selectors.members_of(project=membership.project)

    @extend_schema(tags=["members"], summary="The project's members (admin)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["members"],
        request=s.MemberSetSerializer,
        responses={200: s.MemberSerializer, **ERRORS},
        summary="Add a member or change their role (admin)",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        data = _valid(s.MemberSetSerializer, request)
        changed = services.membership_set(
            project=membership.project, user=data["username"], role=data["role"]
        )
        return Response(s.MemberSerializer(changed).data)


class InvitationView(ApiView):
    @extend_schema(
        tags=["members"],
        request=s.MemberInviteSerializer,
        responses={201: s.MemberInvitedSerializer, **ERRORS},
        summary="Invite someone new (admin): an account without a password, a member at once,"
        " and the link that sets their password",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        data = _valid(s.MemberInviteSerializer, request)
        invited = services.member_invite(project=membership.project, **data)
        body = {
            "user_id": invited.user_id,
            "user": invited.user,
            "role": invited.role,
            "invite_link": invite_link(request, invited.user),
        }
        return Response(s.MemberInvitedSerializer(body).data, status=status.HTTP_201_CREATED)


class MemberDetailView(ApiView):
    @extend_schema(
        tags=["members"],
        responses={204: None, **ERRORS},
        summary="Remove a member (admin); a project keeps at least one admin",
    )
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        services.membership_remove(project=membership.project, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- the queue ------------------------------------------------------------------------------


class NextView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.NextSerializer,
        responses={
            200: s.LeaseTaskSerializer,
            204: OpenApiResponse(description="Nothing is left for you of this kind."),
            **ERRORS,
        },
        summary="Lease the next task (or get back the one you already hold)",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id)
        data = fast.next_fast(request.data)
        if data is None:
            data = _valid(s.NextSerializer, request)
        claimed = queue.claim(
            user_id=request.user.pk,
            project_id=membership.project_id,
            lease_seconds=membership.project.lease_seconds,
            now=timezone.now(),
            **data,
        )
        if claimed is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(selectors.lease_task(lease_id=claimed.lease_id, rows=claimed.task_rows))


class LeaseDetailView(QueueView):
    @extend_schema(
        tags=["queue"],
        responses={200: s.LeaseTaskSerializer, 404: ERRORS[404]},
        summary="One of my leases: the task it holds, as `next` answered",
    )
    def get(self, request: Request, lease_id: int) -> Response:
        access.lease_require(lease_id=lease_id, user_id=request.user.pk)
        return Response(selectors.lease_task(lease_id=lease_id))


class HeartbeatView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=None,
        responses={200: s.LeaseStateSerializer, **LEASE_ERRORS},
        summary="Extend an unexpired lease",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        _valid_for_lease(s.EmptySerializer, request, lease_id)
        lease = queue.heartbeat(lease_id=lease_id, user_id=request.user.pk, now=timezone.now())
        return Response(s.LeaseStateSerializer(lease).data)


class ReclaimView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=None,
        responses={200: s.LeaseStateSerializer, **LEASE_ERRORS},
        summary="Re-activate an expired lease if the task still has a free slot",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        _valid_for_lease(s.EmptySerializer, request, lease_id)
        lease = queue.reclaim(lease_id=lease_id, user_id=request.user.pk, now=timezone.now())
        return Response(s.LeaseStateSerializer(lease).data)


class SkipView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.SkipSerializer,
        responses={200: s.LeaseStateSerializer, **LEASE_ERRORS},
        summary="Give the task back; you will not be offered it again",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        data = _valid_for_lease(s.SkipSerializer, request, lease_id)
        lease = queue.skip(lease_id=lease_id, user_id=request.user.pk, now=timezone.now(), **data)
        return Response(s.LeaseStateSerializer(lease).data)


class DraftView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.DraftSerializer,
        responses={204: None, **LEASE_ERRORS},
        summary="Autosave the demonstration being written",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        data = _valid_for_lease(s.DraftSerializer, request, lease_id)
        services.demonstration_draft_save(
            lease_id=lease_id, user_id=request.user.pk, now=timezone.now(), **data
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class DemonstrationSubmitView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.DemonstrationSubmitSerializer,
        responses={
            201: s.DemonstrationSerializer,
            200: OpenApiResponse(s.DemonstrationSerializer, description="Already submitted."),
            **LEASE_ERRORS,
        },
        summary="Submit the demonstration (idempotent on the lease)",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        data = _valid_for_lease(s.DemonstrationSubmitSerializer, request, lease_id)
        demonstration, created = services.demonstration_submit(
            lease_id=lease_id, user_id=request.user.pk, now=timezone.now(), **data
        )
        return Response(
            s.DemonstrationSerializer(demonstration).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class RankingSubmitView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.RankingSubmitSerializer,
        responses={
            201: s.LabelerRankingSerializer,
            200: OpenApiResponse(s.LabelerRankingSerializer, description="Already submitted."),
            **LEASE_ERRORS,
        },
        summary="Submit the ranking: rank (1 = best, ties allowed), 1-7 rating, flags per output,"
        " each output named by its slot letter from `next`",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        data = fast.ranking_submit_fast(request.data)
        if data is None:
            data = _valid_for_lease(s.RankingSubmitSerializer, request, lease_id)
        ranking, created = services.ranking_submit(
            lease_id=lease_id,
            user_id=request.user.pk,
            entries=[dict(entry) for entry in data.pop("entries")],
            now=timezone.now(),
            **data,
        )
        return Response(
            # The labeler is the caller: the service checked the lease is theirs.
            fast.ranking_data(ranking, labeler=request.user.username),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ComparisonSubmitView(QueueView):
    @extend_schema(
        tags=["queue"],
        request=s.ComparisonSubmitSerializer,
        responses={
            201: s.ComparisonSerializer,
            200: OpenApiResponse(s.ComparisonSerializer, description="Already submitted."),
            **LEASE_ERRORS,
        },
        summary="Submit a blind A/B judgement: a, b, tie or both_bad (idempotent on the lease)",
    )
    def post(self, request: Request, lease_id: int) -> Response:
        data = _valid_for_lease(s.ComparisonSubmitSerializer, request, lease_id)
        comparison, created = services.comparison_submit(
            lease_id=lease_id, user_id=request.user.pk, now=timezone.now(), **data
        )
        return Response(
            s.ComparisonSerializer(comparison).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# --- imports --------------------------------------------------------------------------------

IMPORT_RESPONSES = {
    201: s.ImportResultSerializer,
    **ERRORS,
    413: OpenApiResponse(s.ErrorSerializer, description="The file is over the size limit."),
}


class PromptImportView(ApiView):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        tags=["imports"],
        request={
            "multipart/form-data": s.PromptImportSerializer,
            "application/json": s.PromptImportSerializer,
        },
        responses=IMPORT_RESPONSES,
        summary="Import prompts from .jsonl/.csv (all or nothing; every bad line reported)",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        data = _valid(s.PromptImportSerializer, request)
        result = services.prompts_import(project=membership.project, **data)
        return Response(s.ImportResultSerializer(result).data, status=status.HTTP_201_CREATED)


class RankingTaskImportView(ApiView):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        tags=["imports"],
        request={
            "multipart/form-data": s.RankingTaskImportSerializer,
            "application/json": s.RankingTaskImportSerializer,
        },
        responses=IMPORT_RESPONSES,
        summary="Import ranking tasks: JSONL of {prompt|messages, completions: [K outputs]}",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.ADMIN)
        data = _valid(s.RankingTaskImportSerializer, request, project=membership.project)
        result = services.ranking_tasks_import(project=membership.project, **data)
        return Response(s.ImportResultSerializer(result).data, status=status.HTTP_201_CREATED)


# --- reviewer reads -------------------------------------------------------------------------


class ExportView(ApiView):
    """A training-ready export, streamed as it is read in constant memory (exports.py): JSON
    lines (the default, or `Accept: application/x-ndjson`), or a Parquet file (`?format=parquet`
    or `Accept: application/vnd.apache.parquet`).

    Resuming: a stream cut short cannot say where it stopped (its headers are long gone), so the
    client does: it keeps the complete lines it got and asks again with `?after=` the id of the
    last one (`id` for sft, `ranking_id` for rankings). A preference export resumes at a ranking
    boundary: the client drops the trailing lines of the last ranking_id it got (that ranking's
    pairs may be incomplete) and asks with `?after=` the ranking_id before it.
    """

    renderer_classes = [JSONRenderer, NDJSONRenderer, ParquetRenderer]

    @extend_schema(
        tags=["exports"],
        parameters=[
            OpenApiParameter(
                "split",
                enum=["", *Split.values],
                required=False,
                description="One split; left out or empty: all of them.",
            ),
            OpenApiParameter(
                "after",
                int,
                required=False,
                description="Resume: only records after this id (`id` of sft records, "
                "`ranking_id` of rankings and preference pairs).",
            ),
            OpenApiParameter(
                "format",
                enum=["", "jsonl", "parquet"],
                required=False,
                description="Left out or empty: JSON lines, unless Accept asks for Parquet.",
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="One JSON record per line (TRL/datasets shapes)."
            ),
            (200, ParquetRenderer.media_type): OpenApiResponse(
                OpenApiTypes.BINARY, description="The same records as a Parquet file."
            ),
            **ERRORS,
        },
        summary="Stream a training-ready JSONL export, or get it as Parquet (reviewer)",
    )
    def get(self, request: Request, project_id: int, kind: str) -> StreamingHttpResponse:
        membership = _member(request, project_id, Role.REVIEWER)
        query = s.ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        split, after = query.validated_data.get("split"), query.validated_data.get("after", 0)
        records = exports.EXPORTS[kind](project=membership.project, split=split, after=after)
        name = f"{membership.project.slug}-{kind}-{split or 'all'}"
        if after:
            name += f"-after-{after}"
        if request.accepted_renderer.format == ParquetRenderer.format:
            chunks, media_type = exports.parquet_chunks(kind, records), ParquetRenderer.media_type
            name += ".parquet"
        else:
            chunks, media_type = exports.jsonl_chunks(records), "application/x-ndjson"
            name += ".jsonl"
        response = StreamingHttpResponse(chunks, content_type=media_type)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        # An error is JSON whichever format was asked for (a 400 is no Parquet file).
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class ProgressView(ApiView):
    @extend_schema(tags=["reports"], responses={200: s.ProgressSerializer, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.REVIEWER)
        return Response(selectors.project_progress(project=membership.project))


class AgreementView(ApiView):
    @extend_schema(
        tags=["reports"],
        responses={200: s.AgreementSerializer, **ERRORS},
        summary="Inter-labeler agreement on shared ranking tasks (reviewer)",
    )
    def get(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.REVIEWER)
        agreement = selectors.labeler_agreement(project=membership.project)
        return Response(s.AgreementSerializer(agreement).data)


class LabelersView(ApiView):
    @extend_schema(tags=["reports"], responses={200: s.LabelerRowSerializer(many=True), **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        membership = _member(request, project_id, Role.REVIEWER)
        rows = selectors.labeler_counts(project=membership.project, now=timezone.now())
        return Response(s.LabelerRowSerializer(rows, many=True).data)


class DemonstrationListView(generics.ListAPIView):
    """Demonstrations in the project: a labeler's own, or all of them for reviewers."""

    serializer_class = s.DemonstrationSerializer
    queryset = Demonstration.objects.none()

    def get_queryset(self):
        membership = _member(self.request, self.kwargs["project_id"])
        return selectors.demonstrations_visible(membership=membership)

    @extend_schema(tags=["submissions"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TaskListView(generics.ListAPIView):
    """The project's tasks, newest first, with the models behind their outputs (reviewer)."""

    serializer_class = s.TaskReviewSerializer
    queryset = Task.objects.none()

    def get_queryset(self):
        _member(self.request, self.kwargs["project_id"], Role.REVIEWER)
        kind = self.request.query_params.get("kind")
        if kind is not None and kind not in TaskKind.values:
            raise Invalid(f"kind must be one of {', '.join(TaskKind.values)}, not {kind!r}.")
        return selectors.tasks_for_review(project_id=self.kwargs["project_id"], kind=kind)

    @extend_schema(
        tags=["submissions"],
        parameters=[OpenApiParameter("kind", enum=TaskKind.values, required=False)],
        responses={200: s.TaskReviewSerializer(many=True), **ERRORS},
        summary="The project's tasks, newest first, with their outputs and models (reviewer)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ComparisonListView(generics.ListAPIView):
    """The project's blind A/B judgements with both outputs and their models (reviewer): what
    the win rates are counted from, for a script's own analysis."""

    serializer_class = s.ComparisonReviewSerializer
    queryset = Comparison.objects.none()

    def get_queryset(self):
        _member(self.request, self.kwargs["project_id"], Role.REVIEWER)
        return selectors.comparisons_for_review(
            project_id=self.kwargs["project_id"], model=self.request.query_params.get("model")
        )

    @extend_schema(
        tags=["submissions"],
        parameters=[
            OpenApiParameter("model", str, description="Only those this model took part in.")
        ],
        responses={200: s.ComparisonReviewSerializer(many=True), **ERRORS},
        summary="Blind A/B judgements with both outputs and their models (reviewer)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RankingListView(generics.ListAPIView):
    """Rankings in the project: a labeler's own, by slot letter (no completion ids, which would
    let them correlate outputs across tasks: labeling/blinding.py); all of them, by completion
    id, for reviewers."""

    serializer_class = s.RankingSerializer
    queryset = Ranking.objects.none()

    def get_queryset(self):
        self.membership = _member(self.request, self.kwargs["project_id"])
        return selectors.rankings_visible(membership=self.membership)

    def get_serializer_class(self) -> type:
        # Blind unless the caller is known to be a reviewer: get_queryset sets the membership;
        # without it (schema generation, a future code path) the labeler's shape is the safe one.
        membership = getattr(self, "membership", None)
        if membership is not None and membership.allows(Role.REVIEWER):
            return s.RankingSerializer
        return s.LabelerRankingSerializer

    @extend_schema(
        tags=["submissions"],
        responses=PolymorphicProxySerializer(
            component_name="RankingAsSeen",
            serializers=[s.RankingSerializer, s.LabelerRankingSerializer],
            resource_type_field_name=None,
            many=True,
        ),
        description="Reviewers get every ranking with completion ids (Ranking); a labeler gets"
        " their own, each output by its slot letter (LabelerRanking).",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
