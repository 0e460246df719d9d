"""/api/v1/ for the machine side: registering base models, a project's models and their lineage,
launching, polling and cancelling runs, starting, reading and cancelling rounds, and the
evaluation dashboard's figures. Thin like labeling/api/views.py: membership check, one service
or selector call."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from labeling import access, services
from labeling.api.formats import JSONParser
from labeling.api.serializers import ErrorSerializer, InvalidInputSerializer, StrictSerializer
from labeling.api.views import ApiView
from labeling.errors import Invalid, NotFound
from labeling.models import Completion, ModelVersion, Role, Split

from . import loop, registry, review, rounds, runs, selectors
from .models import ModelRegistration, Recipe, Round, SourceKind, TrainingRun

ERRORS = {
    400: OpenApiResponse(InvalidInputSerializer, description="Invalid input."),
    403: OpenApiResponse(ErrorSerializer, description="Your role does not allow this."),
    404: OpenApiResponse(ErrorSerializer, description="Not found, or not yours."),
}


class RegistrationSerializer(serializers.ModelSerializer):
    model_version = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The model version, once registered."
    )

    class Meta:
        model = ModelRegistration
        fields = [
            "id", "name", "source_kind", "source", "revision", "status", "error", "info",
            "model_version", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class RegistrationCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120)
    source_kind = serializers.ChoiceField(choices=SourceKind.choices)
    source = serializers.CharField(
        max_length=500,
        help_text="A path under the models root (directory or .gguf file), or a hub name.",
    )
    revision = serializers.CharField(
        max_length=100,
        required=False,
        default="",
        allow_blank=True,
        help_text="A hub revision (blank: the default branch).",
    )
    default_chat_template = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=100_000,
        help_text="A Jinja chat template, used only when the model's tokenizer has none.",
    )


class HeldOutAccuracySerializer(serializers.Serializer):
    accuracy = serializers.FloatField(
        help_text="Share of held-out untied pairs ordered as labelers did."
    )
    pairs = serializers.IntegerField(help_text="Untied completion pairs it is computed on.")
    rankings = serializers.IntegerField(
        allow_null=True, help_text="Held-out rankings they came from."
    )
    low = serializers.FloatField(help_text="95% Wilson interval, lower end.")
    high = serializers.FloatField(help_text="95% Wilson interval, upper end.")
    excludes_chance = serializers.BooleanField(help_text="The interval lies wholly off 50%.")
    enough_pairs = serializers.BooleanField(
        help_text="At least pairs_needed pairs: enough to tell 60% from 50% (95%, 80% power)."
    )
    pairs_needed = serializers.IntegerField()


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    held_out_accuracy = serializers.SerializerMethodField(
        help_text="A reward model's held-out pair accuracy with its n and 95% interval (null"
        " for other kinds, or when it was not measured)."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "kind", "parent", "metrics", "held_out_accuracy", "artifact_uri",
            "sha256", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(HeldOutAccuracySerializer(allow_null=True))
    def get_held_out_accuracy(self, version: ModelVersion) -> dict[str, Any] | None:
        if version.kind != ModelVersion.Kind.REWARD:
            return None
        found = selectors.held_out_accuracy_of(version.metrics or {})
        return None if found is None else HeldOutAccuracySerializer(found).data


class RegistrationListView(generics.ListAPIView):
    serializer_class = RegistrationSerializer
    parser_classes = [JSONParser]
    queryset = ModelRegistration.objects.none()

    def get_queryset(self):
        membership = access.membership_require(
            user_id=self.request.user.pk, project_id=self.kwargs["project_id"], role=Role.ADMIN
        )
        return ModelRegistration.objects.filter(project=membership.project).order_by("-pk")

    @extend_schema(tags=["models"], summary="Base-model registrations, newest first (admin)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["models"],
        request=RegistrationCreateSerializer,
        responses={202: RegistrationSerializer, **ERRORS},
        summary="Register a base model (admin): a worker copies and checks it, then it is a model",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        body = RegistrationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        registration = registry.registration_create(
            project=membership.project, created_by=request.user, **body.validated_data
        )
        return Response(RegistrationSerializer(registration).data, status=status.HTTP_202_ACCEPTED)


class RegistrationDetailView(ApiView):
    @extend_schema(tags=["models"], responses={200: RegistrationSerializer, **ERRORS})
    def get(self, request: Request, project_id: int, registration_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        registration = ModelRegistration.objects.filter(
            project=membership.project, pk=registration_id
        ).first()
        if registration is None:
            raise NotFound("No such registration.")
        return Response(RegistrationSerializer(registration).data)


class ModelVersionListView(generics.ListAPIView):
    serializer_class = ModelVersionSerializer
    parser_classes = [JSONParser]
    queryset = ModelVersion.objects.none()

    def get_queryset(self):
        membership = access.membership_require(
            user_id=self.request.user.pk, project_id=self.kwargs["project_id"], role=Role.REVIEWER
        )
        return ModelVersion.objects.filter(project=membership.project).order_by("pk")

    @extend_schema(tags=["models"], summary="The project's model versions (reviewer and up)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# --- the reviewer dashboard's figures as JSON ------------------------------------------------


class WinRateSerializer(serializers.Serializer):
    model = serializers.CharField()
    baseline = serializers.CharField()
    n = serializers.IntegerField(help_text="Blind judgements between the two.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField(help_text="Ties and 'both bad'.")
    rate = serializers.FloatField(allow_null=True, help_text="(wins + ties/2) / n.")
    low = serializers.FloatField(allow_null=True, help_text="95% prompt-clustered bootstrap.")
    high = serializers.FloatField(allow_null=True)


class RatingSerializer(serializers.Serializer):
    model = serializers.CharField()
    rating = serializers.FloatField(help_text="Bradley–Terry on the Elo scale, baseline 1000.")
    low = serializers.FloatField(help_text="95% bootstrap interval.")
    high = serializers.FloatField()
    n = serializers.IntegerField(help_text="Comparisons the model took part in.")


class LikertSerializer(serializers.Serializer):
    mean = serializers.FloatField()
    n = serializers.IntegerField(help_text="Rated outputs.")


class RewardModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    accuracy = serializers.FloatField(allow_null=True)
    held_out = HeldOutAccuracySerializer(allow_null=True)


class RoundResultSerializer(serializers.Serializer):
    number = serializers.IntegerField(source="round.number")
    recipe = serializers.CharField(source="round.recipe")
    over_start = WinRateSerializer(help_text="The new policy against the policy it started from.")
    over_baseline = WinRateSerializer(
        allow_null=True, help_text="Against SFT trained for as many optimizer steps (null: none)."
    )
    baseline = serializers.CharField(source="baseline_name", allow_null=True)


class EvaluationSerializer(serializers.Serializer):
    computed_at = serializers.DateTimeField(
        allow_null=True, help_text="When these figures were counted (null: not yet)."
    )
    comparisons = serializers.IntegerField(help_text="Blind comparisons they are counted from.")
    new_comparisons = serializers.IntegerField(
        help_text="Comparisons since then (counted up to 100,000)."
    )
    new_ranked_outputs = serializers.IntegerField(help_text="Ranked outputs since then.")
    computing = serializers.BooleanField(help_text="A worker is counting them again.")
    baseline = serializers.CharField(allow_null=True)
    win_rates = WinRateSerializer(many=True)
    ratings = RatingSerializer(many=True)
    ratings_length_controlled = RatingSerializer(many=True)
    flag_rates = serializers.DictField(
        child=serializers.DictField(child=serializers.FloatField()),
        help_text="Per model, the share of its ranked outputs carrying each flag.",
    )
    likert = serializers.DictField(child=LikertSerializer())
    reward_models = RewardModelSerializer(many=True)
    pairs_needed = serializers.IntegerField(
        help_text="Held-out pairs that tell a 60% reward model from a coin (95%, 80% power)."
    )
    agreement = serializers.FloatField(
        allow_null=True, help_text="Labelers' pairwise agreement on shared rankings."
    )
    rounds = RoundResultSerializer(many=True)


class EvaluationView(ApiView):
    @extend_schema(
        tags=["reports"],
        parameters=[
            OpenApiParameter(
                "baseline", str, description="A compared model's name (default: the oldest)."
            )
        ],
        responses={200: EvaluationSerializer, **ERRORS},
        summary="The evaluation dashboard's figures (reviewer): win rates with intervals,"
        " Bradley–Terry, flags, Likert, reward models, agreement, rounds",
    )
    def get(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.REVIEWER
        )
        freshness = review.snapshot_for_page(project=membership.project, now=timezone.now())
        baseline = request.query_params.get("baseline")
        dashboard = selectors.evaluation_dashboard(
            project=membership.project, baseline=baseline, data=freshness.data
        )
        if baseline is not None and dashboard.baseline != baseline:
            compared = sorted({w.model for w in dashboard.win_rates} | {dashboard.baseline or ""})
            raise Invalid(
                f"baseline {baseline!r} has no blind comparisons here; compared models:"
                f" {', '.join(m for m in compared if m) or 'none yet'}."
            )
        snapshot = freshness.snapshot
        figures = {
            "computed_at": snapshot.computed_at if snapshot is not None else None,
            "comparisons": dashboard.comparisons,
            "new_comparisons": freshness.new_comparisons,
            "new_ranked_outputs": freshness.new_entries,
            "computing": freshness.computing,
            "baseline": dashboard.baseline,
            "win_rates": dashboard.win_rates,
            "ratings": dashboard.ratings,
            "ratings_length_controlled": dashboard.ratings_lc,
            "flag_rates": dashboard.metadata,
            "likert": {m: {"mean": mean, "n": n} for m, (mean, n) in dashboard.likert.items()},
            "reward_models": dashboard.reward_models,
            "pairs_needed": dashboard.pairs_needed,
            "agreement": dashboard.agreement,
            "rounds": dashboard.rounds,
        }
        return Response(EvaluationSerializer(figures).data)


class EvaluationFreshnessSerializer(serializers.Serializer):
    computed_at = serializers.DateTimeField(
        allow_null=True, help_text="When the figures were last counted (null: not yet)."
    )
    new_comparisons = serializers.IntegerField(help_text="Comparisons since then.")
    new_ranked_outputs = serializers.IntegerField(help_text="Ranked outputs since then.")
    computing = serializers.BooleanField(help_text="A worker is counting them again.")


class EvaluationRefreshView(ApiView):
    @extend_schema(
        tags=["reports"],
        request=None,
        responses={202: EvaluationFreshnessSerializer, **ERRORS},
        summary="Ask a worker to count the dashboard's figures again (reviewer); poll"
        " evaluation/ until computed_at moves",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.REVIEWER
        )
        review.refresh_request(project_id=membership.project.pk, now=timezone.now())
        found = review.freshness_of(project=membership.project)
        body = {
            "computed_at": found.snapshot.computed_at if found.snapshot is not None else None,
            "new_comparisons": found.new_comparisons,
            "new_ranked_outputs": found.new_entries,
            "computing": found.computing,
        }
        return Response(EvaluationFreshnessSerializer(body).data, status=status.HTTP_202_ACCEPTED)


# --- training runs --------------------------------------------------------------------------


class RunSerializer(serializers.ModelSerializer):
    base_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    reward_model = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    model_version = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        allow_null=True,
        help_text="The model it registered, once it succeeded.",
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id", "kind", "status", "config", "base_model", "reward_model", "model_version",
            "step", "total_steps", "attempt", "max_attempts", "cancel_requested", "error",
            "queue", "ran_on", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class MetricPointSerializer(serializers.Serializer):
    name = serializers.CharField()
    step = serializers.IntegerField()
    value = serializers.FloatField()


class RunDetailSerializer(serializers.Serializer):
    run = RunSerializer()
    metrics = MetricPointSerializer(
        many=True, help_text="Logged values after `since`, in step order (at most 10,000)."
    )
    next_since = serializers.IntegerField(
        help_text="The step to ask from next (`?since=`) when polling for new points."
    )


QUEUE_HELP = (
    "The GPU queue (one per GPU type) {what} sent to: one of the deployment's"
    " INSTRUCTLOOP_GPU_QUEUES; blank or left out: the first of them. Any other name is a 400"
    " that lists them."
)


def _queue_field(what: str) -> serializers.CharField:
    return serializers.CharField(
        max_length=64,
        required=False,
        default="",
        allow_blank=True,
        help_text=QUEUE_HELP.format(what=what),
    )


class RunStartSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    base_model = serializers.CharField(max_length=120, help_text="The model to train from.")
    reward_model = serializers.CharField(
        max_length=120, required=False, help_text="PPO and critic-free runs: the reward model."
    )
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text="The stage's settings (training/engine/config.py); what is left out takes the"
        " stage's default, and the run stores them all.",
    )
    queue = _queue_field("the run is")


class RunListView(generics.ListAPIView):
    serializer_class = RunSerializer
    queryset = TrainingRun.objects.none()

    def get_queryset(self):
        membership = access.membership_require(
            user_id=self.request.user.pk, project_id=self.kwargs["project_id"], role=Role.REVIEWER
        )
        return selectors.runs_of(project=membership.project)

    @extend_schema(tags=["runs"], summary="The project's training runs, newest first (reviewer)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["runs"],
        request=RunStartSerializer,
        responses={201: RunSerializer, **ERRORS},
        summary="Launch a training run (admin): its config is checked by the stage's config class"
        " and stored resolved; the rows it trains on are frozen now",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        body = RunStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        reward_name = data.get("reward_model")
        run = runs.run_start(
            project=membership.project,
            kind=data["kind"],
            config=data["config"],
            created_by=request.user,
            base_model=_model_named(membership.project, data["base_model"]),
            reward_model=_model_named(membership.project, reward_name) if reward_name else None,
            queue=data["queue"],
        )
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)


def _model_named(project: Any, name: str) -> ModelVersion:
    found = ModelVersion.objects.filter(project=project, name=name).first()
    if found is None:
        raise Invalid(f"No model named {name!r} in this project.")
    return found


class RunDetailView(ApiView):
    @extend_schema(
        tags=["runs"],
        parameters=[
            OpenApiParameter(
                "since", int, description="Only metric points after this step (default -1: all)."
            )
        ],
        responses={200: RunDetailSerializer, **ERRORS},
        summary="A run with its metric points, for polling (reviewer)",
    )
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.REVIEWER
        )
        run = selectors.run_for_page(project=membership.project, run_id=run_id)
        if run is None:
            raise NotFound("No such run.")
        since = _since(request.query_params.get("since"))
        points = selectors.run_metrics_since(run=run, since=since, limit=METRICS_PAGE)
        if len(points) == METRICS_PAGE and points[0][1] != points[-1][1]:
            # A full page may end inside a step: that step comes whole in the next answer.
            points = [point for point in points if point[1] != points[-1][1]]
        next_since = points[-1][1] if points else since
        body = {
            "run": run,
            "metrics": [{"name": n, "step": st, "value": v} for n, st, v in points],
            "next_since": next_since,
        }
        return Response(RunDetailSerializer(body).data)


# Metric points one answer carries at most; a client asks again from `next_since`.
METRICS_PAGE = 10_000


def _since(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        since = int(raw)
    except ValueError:
        raise Invalid(f"since must be a whole step number, not {raw!r}.") from None
    if since < -1:
        raise Invalid(f"since must be -1 or more, not {since}.")
    return since


class RunCancelView(ApiView):
    @extend_schema(
        tags=["runs"],
        request=None,
        responses={200: RunSerializer, 409: OpenApiResponse(ErrorSerializer), **ERRORS},
        summary="Stop a run (admin): a queued one at once, a running one at its next step",
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        run = loop.run_cancel(run_id=run_id, project=membership.project, now=timezone.now())
        return Response(RunSerializer(run).data)


class RunResumeView(ApiView):
    @extend_schema(
        tags=["runs"],
        request=None,
        responses={
            202: RunSerializer,
            409: OpenApiResponse(
                ErrorSerializer,
                description="Not a failed run, or a step of a round (start a new round).",
            ),
            **ERRORS,
        },
        summary="Queue a failed run again (admin); it continues from its last checkpoint",
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        run = loop.run_resume(
            run_id=run_id,
            project=membership.project,
            now=timezone.now(),
            by=request.user.get_username(),
        )
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


# --- rounds ---------------------------------------------------------------------------------


class RoundStepSerializer(serializers.Serializer):
    label = serializers.CharField()
    run = RunSerializer(allow_null=True, help_text="null: a step still to come.")


class RoundSerializer(serializers.ModelSerializer):
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True)
    new_policy = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Round
        fields = [
            "number", "recipe", "status", "stage", "policy", "new_policy", "config", "queue",
            "gate", "error", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class RoundDetailSerializer(serializers.Serializer):
    round = RoundSerializer()
    steps = RoundStepSerializer(many=True)
    results = RoundResultSerializer(
        allow_null=True, help_text="Win rates once the round finished and was judged blind."
    )


class RoundStartSerializer(StrictSerializer):
    policy = serializers.CharField(
        max_length=120, help_text="The name of the policy to start from (base, SFT or a policy)."
    )
    recipe = serializers.ChoiceField(choices=Recipe.choices, default=Recipe.INSTRUCTGPT)
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text="Per-step settings (keyed by run kind: reward, ppo, critic_free, dpo, baseline,"
        " sample, rank_sample), the gate and max_prompts, eval_prompts, k; e.g."
        ' {"reward": {"max_steps": 50}, "ppo": {"lr": 1e-5}, "gate": {"max_kl": 8}, "k": 4}.',
    )
    queue = _queue_field("every step's run is")


class RoundListView(generics.ListAPIView):
    serializer_class = RoundSerializer
    queryset = Round.objects.none()

    def get_queryset(self):
        membership = access.membership_require(
            user_id=self.request.user.pk, project_id=self.kwargs["project_id"], role=Role.REVIEWER
        )
        return selectors.rounds_for_project(project=membership.project)

    @extend_schema(tags=["rounds"], summary="The project's rounds, newest first (reviewer)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["rounds"],
        request=RoundStartSerializer,
        responses={201: RoundSerializer, 409: OpenApiResponse(ErrorSerializer), **ERRORS},
        summary="Start the next round (admin); settings are checked before anything runs",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        body = RoundStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        round_ = rounds.round_start(
            project=membership.project,
            policy=_model_named(membership.project, body.validated_data["policy"]),
            created_by=request.user,
            config=body.validated_data["config"],
            recipe=body.validated_data["recipe"],
            queue=body.validated_data["queue"],
        )
        return Response(RoundSerializer(round_).data, status=status.HTTP_201_CREATED)


class RoundDetailView(ApiView):
    @extend_schema(
        tags=["rounds"],
        responses={200: RoundDetailSerializer, **ERRORS},
        summary="A round with each step's run and, once judged, its win rates (reviewer)",
    )
    def get(self, request: Request, project_id: int, number: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.REVIEWER
        )
        round_ = selectors.round_for_page(project=membership.project, number=number)
        if round_ is None:
            raise NotFound("No such round.")
        results = None
        if round_.new_policy_id is not None:
            data = review.snapshot_for_page(project=membership.project, now=timezone.now()).data
            found = selectors.round_results(project=membership.project, data=data, number=number)
            results = found[0] if found else None
        body = {
            "round": round_,
            "steps": [
                {"label": label, "run": run} for label, run in selectors.round_steps(round_=round_)
            ],
            "results": results,
        }
        return Response(RoundDetailSerializer(body).data)


class RoundCancelView(ApiView):
    @extend_schema(
        tags=["rounds"],
        request=None,
        responses={200: RoundSerializer, 409: OpenApiResponse(ErrorSerializer), **ERRORS},
        summary="Stop a running round and its unfinished runs (admin)",
    )
    def post(self, request: Request, project_id: int, number: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        round_ = loop.round_cancel(project=membership.project, number=number, now=timezone.now())
        return Response(RoundSerializer(round_).data)


# --- a model version's lineage ----------------------------------------------------------------


class ModelLineageSerializer(serializers.Serializer):
    model = ModelVersionSerializer()
    parent = serializers.CharField(allow_null=True, help_text="The model it was trained from.")
    run = RunSerializer(
        allow_null=True, help_text="The run that made it, with the config it resolved and ran."
    )
    dataset = serializers.DictField(
        child=serializers.JSONField(),
        help_text="The exact rows it was trained on, by kind (ids), as the run froze them.",
    )
    registration = RegistrationSerializer(
        allow_null=True, help_text="For a registered base model: where it came from."
    )
    children = serializers.ListField(child=serializers.CharField())


class ModelVersionDetailView(ApiView):
    @extend_schema(
        tags=["models"],
        responses={200: ModelLineageSerializer, **ERRORS},
        summary="A model version's lineage: parent, run, resolved config, exact data (reviewer)",
    )
    def get(self, request: Request, project_id: int, version_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.REVIEWER
        )
        version = selectors.model_version_for_page(
            project=membership.project, version_id=version_id
        )
        if version is None:
            raise NotFound("No such model version.")
        run = selectors.training_run_of(version)
        body = {
            "model": version,
            "parent": version.parent.name if version.parent is not None else None,
            "run": run,
            "dataset": run.dataset if run is not None else {},
            "registration": getattr(version, "registration", None),
            "children": list(version.children.order_by("pk").values_list("name", flat=True)),
        }
        return Response(ModelLineageSerializer(body).data)


# --- a model's outputs and blind A/B tasks between two models ------------------------------


class CompletionSerializer(serializers.ModelSerializer):
    prompt = serializers.CharField(source="prompt.text", help_text="Its last user turn.")
    split = serializers.CharField(source="prompt.split")

    class Meta:
        model = Completion
        fields = [
            "id", "prompt_id", "prompt", "split", "text", "temperature", "top_p", "max_tokens",
            "seed", "finished", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ModelCompletionListView(generics.ListAPIView):
    serializer_class = CompletionSerializer
    queryset = Completion.objects.none()

    def get_queryset(self):
        membership = access.membership_require(
            user_id=self.request.user.pk, project_id=self.kwargs["project_id"], role=Role.REVIEWER
        )
        version = selectors.model_version_for_page(
            project=membership.project, version_id=self.kwargs["version_id"]
        )
        if version is None:
            raise NotFound("No such model version.")
        split = self.request.query_params.get("split")
        if split is not None and split not in Split.values:
            raise Invalid(f"split must be one of {', '.join(Split.values)}, not {split!r}.")
        return selectors.completions_of(version=version, split=split)

    @extend_schema(
        tags=["models"],
        parameters=[OpenApiParameter("split", enum=Split.values, required=False)],
        responses={200: CompletionSerializer(many=True), **ERRORS},
        summary="The outputs a model version sampled, with their prompts (reviewer)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class EvaluationTasksSerializer(StrictSerializer):
    model_a = serializers.CharField(max_length=120, help_text="A model version's name.")
    model_b = serializers.CharField(max_length=120, help_text="Another model version's name.")
    split = serializers.ChoiceField(
        choices=Split.choices,
        default=Split.TEST,
        help_text="The prompts whose outputs of both models are compared.",
    )


class EvaluationTasksCreatedSerializer(serializers.Serializer):
    created = serializers.IntegerField(
        help_text="New A/B tasks: one per prompt with an output of both models and no such task."
    )
    skipped_identical = serializers.IntegerField(
        help_text="Prompts left without one: both models gave the same text."
    )


class EvaluationTasksView(ApiView):
    @extend_schema(
        tags=["reports"],
        request=EvaluationTasksSerializer,
        responses={201: EvaluationTasksCreatedSerializer, **ERRORS},
        summary="Blind A/B tasks between two model versions (admin), one per prompt both"
        " sampled; prompts that have one already, or two identical outputs, are skipped",
    )
    def post(self, request: Request, project_id: int) -> Response:
        membership = access.membership_require(
            user_id=request.user.pk, project_id=project_id, role=Role.ADMIN
        )
        body = EvaluationTasksSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project, data = membership.project, body.validated_data
        made = services.evaluation_tasks_make(
            project=project,
            model_a=_model_named(project, data["model_a"]),
            model_b=_model_named(project, data["model_b"]),
            split=data["split"],
        )
        body = {"created": made.created, "skipped_identical": made.skipped_identical}
        return Response(body, status=status.HTTP_201_CREATED)
