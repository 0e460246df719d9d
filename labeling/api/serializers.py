"""Request and response shapes of the JSON API.

Request serializers only check types and shapes; the rules live in labeling/services/ and
labeling/queue.py. Every request serializer rejects fields it does not know, so a body that tries
to set `labeler`, `project`, `status`, `is_gold` or `model_version` is a 400 (BAD-INPUTS 6).
Response serializers never name the model that wrote a completion shown to a labeler, nor give a
labeler a completion id: a labeler names outputs by their slot letters (labeling/blinding.py).
They are the definition and the OpenAPI schema of the payloads labeling/api/fast.py writes by
hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from labeling import blinding, imports, selectors
from labeling.blinding import SLOTS
from labeling.errors import TooLarge
from labeling.models import (
    FLAG_CODES,
    MAX_K,
    MAX_RESPONSE_CHARS,
    Comparison,
    Demonstration,
    Lease,
    Ranking,
    Role,
    Split,
    Task,
    TaskKind,
    Winner,
)
from labeling.services import MAX_NOTES_CHARS, MAX_TIME_SPENT_MS

User = get_user_model()


class StrictSerializer(serializers.Serializer):
    """A request body: unknown fields are an error, never silently dropped or stored; a text
    field is given text (DRF's CharField turns a JSON number into its digits, which the schema,
    saying string, does not allow: schemathesis found `{"text": 5}` stored as "5", and a ranking
    flag 0 taken as "0", issue 16)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, Mapping):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["This field is not accepted."] for name in sorted(unknown)}
                )
            not_text = [
                name
                for name, field in self.fields.items()
                if _number_for_text(field, data.get(name))
            ]
            if not_text:
                raise serializers.ValidationError(
                    {name: ["Not a valid string."] for name in not_text}
                )
        return super().to_internal_value(data)


def _number_for_text(field: serializers.Field, value: Any) -> bool:
    """A number (or a boolean) given to a text field, or inside a list of texts."""
    if isinstance(field, serializers.CharField):
        return isinstance(value, int | float)
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        return any(_number_for_text(field.child, item) for item in value)
    return False


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.ListField(child=serializers.DictField(), required=False)


class InvalidInputSerializer(serializers.Serializer):
    """A 400 comes in one of two shapes: a refusal of the request as a whole (`detail`, with
    `errors` listing each problem, e.g. an import's bad lines by number), or a body whose fields
    did not validate: each such field's name with its messages (`non_field_errors` for the body
    as a whole), e.g. `{"kind": ["This field is required."]}`."""

    detail = serializers.CharField(required=False)
    errors = serializers.ListField(child=serializers.DictField(), required=False)


# --- projects and members -------------------------------------------------------------------


class ProjectSerializer(serializers.Serializer):
    """A project as one member sees it: its settings and the caller's role."""

    id = serializers.IntegerField(source="project.id")
    name = serializers.CharField(source="project.name")
    slug = serializers.CharField(source="project.slug")
    guidelines = serializers.CharField(source="project.guidelines")
    k = serializers.IntegerField(source="project.k")
    overlap = serializers.IntegerField(source="project.overlap")
    demo_overlap = serializers.IntegerField(source="project.demo_overlap")
    flags = serializers.ListField(child=serializers.CharField(), source="project.flags")
    lease_seconds = serializers.IntegerField(source="project.lease_seconds")
    valid_percent = serializers.IntegerField(
        source="project.valid_percent", help_text="Share of new prompts held out for validation."
    )
    test_percent = serializers.IntegerField(
        source="project.test_percent", help_text="Share of new prompts held out for A/B tests."
    )
    created_at = serializers.DateTimeField(source="project.created_at")
    role = serializers.ChoiceField(choices=Role.choices)


class ProjectCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=60)
    guidelines = serializers.CharField(
        max_length=100_000, allow_blank=True, trim_whitespace=False, default=""
    )
    k = serializers.IntegerField(min_value=2, max_value=MAX_K, default=4)
    overlap = serializers.IntegerField(min_value=1, max_value=50, default=1)
    demo_overlap = serializers.IntegerField(min_value=1, max_value=50, default=1)
    flags = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(FLAG_CODES)), required=False
    )
    lease_seconds = serializers.IntegerField(min_value=30, max_value=7 * 24 * 3600, default=900)


class ProjectUpdateSerializer(StrictSerializer):
    """Only the fields sent change; each applies to what comes next (tasks made, leases taken,
    prompts imported from now on)."""

    name = serializers.CharField(max_length=120, required=False)
    guidelines = serializers.CharField(
        max_length=100_000, allow_blank=True, trim_whitespace=False, required=False
    )
    k = serializers.IntegerField(min_value=2, max_value=MAX_K, required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=50, required=False)
    demo_overlap = serializers.IntegerField(min_value=1, max_value=50, required=False)
    flags = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(FLAG_CODES)), required=False
    )
    lease_seconds = serializers.IntegerField(min_value=30, max_value=7 * 24 * 3600, required=False)
    valid_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)
    test_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)


class MemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)


class MemberSetSerializer(StrictSerializer):
    username = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.filter(is_active=True)
    )
    role = serializers.ChoiceField(choices=Role.choices)


class MemberInviteSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = serializers.EmailField(required=False, default="", allow_blank=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.LABELER)


class MemberInvitedSerializer(MemberSerializer):
    invite_link = serializers.URLField(
        help_text="Where they set their first password; it expires (PASSWORD_RESET_TIMEOUT) and"
        " works once. Send it to them yourself."
    )


# --- the queue ------------------------------------------------------------------------------


class NextSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=TaskKind.choices)


class EmptySerializer(StrictSerializer):
    """No body fields (heartbeat, reclaim)."""


class SkipSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500)


class DraftSerializer(StrictSerializer):
    text = serializers.CharField(
        max_length=MAX_RESPONSE_CHARS, allow_blank=True, trim_whitespace=False
    )


class PromptSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    messages = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


SLOT_HELP = (
    "The output's slot letter in this lease (A, B, C, ...: its place in this labeler's shuffled"
    " order), never a completion id; a ranking names outputs by it."
)


class ShownCompletionSerializer(serializers.Serializer):
    id = serializers.ChoiceField(choices=SLOTS, help_text=SLOT_HELP)
    text = serializers.CharField()


class LeaseTaskSerializer(serializers.Serializer):
    """What a labeler is asked to do: the prompt, and for rankings the K outputs in their order,
    each by its slot letter."""

    lease_id = serializers.IntegerField(source="id")
    status = serializers.CharField()
    expires_at = serializers.DateTimeField()
    kind = serializers.CharField(source="task.kind")
    task_id = serializers.IntegerField()
    prompt = PromptSerializer(source="task.prompt")
    completions = serializers.SerializerMethodField()
    flags = serializers.ListField(child=serializers.CharField(), source="task.project.flags")
    k = serializers.SerializerMethodField(
        help_text="How many outputs to rank: the task's own (the project's K, or fewer when a"
        " sampling run found only that many different outputs); the project's K otherwise."
    )
    draft = serializers.SerializerMethodField()

    def get_k(self, lease: Lease) -> int:
        if lease.task.kind == TaskKind.RANKING:
            return len(lease.shown_order)
        return lease.task.project.k

    @extend_schema_field(ShownCompletionSerializer(many=True))
    def get_completions(self, lease: Lease) -> list[dict[str, Any]]:
        return [
            {"id": slot, "text": text} for slot, text in selectors.shown_completions(lease=lease)
        ]

    @extend_schema_field(
        serializers.CharField(
            allow_null=True, help_text="The autosaved draft of a demonstration (null: none)."
        )
    )
    def get_draft(self, lease: Lease) -> str | None:
        if lease.task.kind != "demonstration":
            return None  # only demonstrations have drafts: no lookup for the others
        draft = getattr(lease, "draft", None)
        return draft.text if draft is not None else None


class LeaseStateSerializer(serializers.Serializer):
    lease_id = serializers.IntegerField(source="id")
    status = serializers.CharField()
    expires_at = serializers.DateTimeField()


# --- submits and what was submitted ---------------------------------------------------------


class DemonstrationSubmitSerializer(StrictSerializer):
    text = serializers.CharField(
        max_length=MAX_RESPONSE_CHARS, allow_blank=True, trim_whitespace=False
    )
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=MAX_TIME_SPENT_MS, default=0)


class DemonstrationSerializer(serializers.ModelSerializer):
    labeler = serializers.CharField(source="labeler.username")

    class Meta:
        model = Demonstration
        fields = [
            "id",
            "lease_id",
            "task_id",
            "prompt_id",
            "labeler",
            "text",
            "time_spent_ms",
            "created_at",
        ]
        read_only_fields = fields


class RankingEntryInputSerializer(StrictSerializer):
    completion = serializers.ChoiceField(
        choices=SLOTS,
        help_text=SLOT_HELP,
        error_messages={
            "invalid_choice": (
                'Name each output by the letter it was shown with (A, B, ...), not "{input}".'
            )
        },
    )
    rank = serializers.IntegerField(min_value=1, max_value=MAX_K)
    likert = serializers.IntegerField(min_value=1, max_value=7)
    flags = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=len(FLAG_CODES), default=list
    )


class RankingSubmitSerializer(StrictSerializer):
    entries = RankingEntryInputSerializer(many=True, allow_empty=False, max_length=MAX_K)
    none_acceptable = serializers.BooleanField(default=False)
    notes = serializers.CharField(max_length=MAX_NOTES_CHARS, allow_blank=True, default="")
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=MAX_TIME_SPENT_MS, default=0)


class RankingEntrySerializer(serializers.Serializer):
    completion = serializers.IntegerField(source="completion_id")
    rank = serializers.IntegerField()
    likert = serializers.IntegerField()
    flags = serializers.ListField(child=serializers.CharField())


class RankingSerializer(serializers.ModelSerializer):
    """A ranking as reviewers read it: outputs by completion id, and the order they were shown."""

    labeler = serializers.CharField(source="labeler.username")
    prompt_id = serializers.IntegerField(source="task.prompt_id")
    entries = RankingEntrySerializer(many=True)

    class Meta:
        model = Ranking
        fields = [
            "id",
            "lease_id",
            "task_id",
            "prompt_id",
            "labeler",
            "entries",
            "none_acceptable",
            "notes",
            "time_spent_ms",
            "shown_order",
            "created_at",
        ]
        read_only_fields = fields


class LabelerRankingEntrySerializer(serializers.Serializer):
    completion = serializers.ChoiceField(choices=SLOTS, help_text=SLOT_HELP)
    rank = serializers.IntegerField()
    likert = serializers.IntegerField()
    flags = serializers.ListField(child=serializers.CharField())


class LabelerRankingSerializer(serializers.ModelSerializer):
    """A ranking as its labeler reads it back (the submit's answer, their own list): outputs by
    the slot letters they ranked them under, no completion ids (labeling/blinding.py)."""

    labeler = serializers.CharField(source="labeler.username")
    prompt_id = serializers.IntegerField(source="task.prompt_id")
    entries = serializers.SerializerMethodField()

    class Meta:
        model = Ranking
        fields = [
            "id",
            "lease_id",
            "task_id",
            "prompt_id",
            "labeler",
            "entries",
            "none_acceptable",
            "notes",
            "time_spent_ms",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(LabelerRankingEntrySerializer(many=True))
    def get_entries(self, ranking: Ranking) -> list[dict[str, Any]]:
        slots = blinding.slots(ranking.shown_order)
        return [
            {
                "completion": slots[e.completion_id],
                "rank": e.rank,
                "likert": e.likert,
                "flags": e.flags,
            }
            for e in ranking.entries.all()
        ]


# --- imports and reports --------------------------------------------------------------------


class _RecordField(serializers.JSONField):
    """One record of an import's JSON body, taken as the parser read it: labeling/imports.py judges
    it as a line of a file. (JSONField's own check writes the value out again, which for a value
    nested nearly as deep as the parser allows ran past Python's recursion limit.)"""

    def to_internal_value(self, data: Any) -> Any:
        return data


class _ImportSerializer(StrictSerializer):
    """A `file` upload (multipart) or a JSON body {"records": [...]}, one record per line."""

    file = serializers.FileField(required=False, allow_empty_file=False)
    records = serializers.ListField(child=_RecordField(), required=False, min_length=1)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if ("file" in attrs) == ("records" in attrs):
            raise serializers.ValidationError('Send exactly one of "file" or "records".')
        if "file" in attrs:
            upload = attrs.pop("file")
            limit = settings.IMPORT_MAX_BYTES
            if upload.size > limit:  # refuse before reading it; the parser checks again
                raise TooLarge(f"The file is {upload.size:,} bytes; the limit is {limit:,}.")
            attrs["filename"], attrs["data"] = upload.name or "upload.jsonl", upload.read()
            attrs["source"] = attrs["filename"]
        else:
            attrs["source"] = "api"
        return attrs


class PromptImportSerializer(_ImportSerializer):
    collect_demonstrations = serializers.BooleanField(default=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if "records" in attrs:
            attrs["rows"] = imports.parse_prompt_records(attrs.pop("records"))
        else:
            attrs["rows"] = imports.parse_prompts(
                attrs.pop("filename"), attrs.pop("data"), max_bytes=settings.IMPORT_MAX_BYTES
            )
        return attrs


class RankingTaskImportSerializer(_ImportSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        k = self.context["project"].k
        if "records" in attrs:
            attrs["rows"] = imports.parse_ranking_task_records(attrs.pop("records"), k=k)
        else:
            attrs["rows"] = imports.parse_ranking_tasks(
                attrs.pop("filename"), attrs.pop("data"), k=k, max_bytes=settings.IMPORT_MAX_BYTES
            )
        return attrs


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="New prompts.")
    tasks_created = serializers.IntegerField()
    splits = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="New prompts per split (train, valid, test); test prompts get no"
        " demonstration task: they are held out for blind A/B evaluation.",
    )


class ExportQuerySerializer(serializers.Serializer):
    split = serializers.ChoiceField(choices=Split.choices, required=False)
    # The resume cursor: the id of the last complete record received (exports.py).
    after = serializers.IntegerField(
        min_value=0,
        max_value=2**63 - 1,  # a bigint: larger is no id, and PostgreSQL would refuse it
        required=False,
        error_messages={
            "invalid": "`after` must be the id of the last record received: a whole number.",
            "min_value": "`after` must be the id of the last record received: 0 or more.",
            "max_value": "`after` is larger than any id.",
        },
    )


class KindProgressSerializer(serializers.Serializer):
    tasks = serializers.IntegerField()
    done = serializers.IntegerField()
    submitted = serializers.IntegerField()
    wanted = serializers.IntegerField()


class ProgressSerializer(serializers.Serializer):
    demonstration = KindProgressSerializer()
    ranking = KindProgressSerializer()


class AgreementSerializer(serializers.Serializer):
    """labeler_agreement's result with its tuple-keyed dicts turned into JSON lists."""

    overall = serializers.FloatField(allow_null=True)
    comparisons = serializers.IntegerField()
    pairs = serializers.SerializerMethodField()
    per_labeler = serializers.SerializerMethodField()

    @extend_schema_field(
        inline_serializer(
            "AgreementPair",
            {
                "labelers": serializers.ListField(child=serializers.IntegerField()),
                "agreement": serializers.FloatField(),
            },
            many=True,
        )
    )
    def get_pairs(self, agreement: dict) -> list[dict[str, Any]]:
        return [
            {"labelers": [a, b], "agreement": value}
            for (a, b), value in sorted(agreement["pairs"].items())
        ]

    @extend_schema_field(
        inline_serializer(
            "LabelerAgreement",
            {"labeler": serializers.IntegerField(), "agreement": serializers.FloatField()},
            many=True,
        )
    )
    def get_per_labeler(self, agreement: dict) -> list[dict[str, Any]]:
        return [
            {"labeler": user_id, "agreement": value}
            for user_id, value in sorted(agreement["per_labeler"].items())
        ]


class LabelerRowSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()
    demonstrations = serializers.IntegerField()
    rankings = serializers.IntegerField()
    rankings_last_7_days = serializers.IntegerField()
    skips = serializers.IntegerField()
    agreement = serializers.FloatField(allow_null=True)


class ComparisonSubmitSerializer(StrictSerializer):
    winner = serializers.ChoiceField(choices=Winner.choices)
    notes = serializers.CharField(max_length=MAX_NOTES_CHARS, allow_blank=True, default="")
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=MAX_TIME_SPENT_MS, default=0)


class ComparisonSerializer(serializers.ModelSerializer):
    """What the evaluator submitted, as they read it back: the winning side's letter, never the
    sides' completion ids (ids follow creation order, and a round samples the new policy first:
    labeling/blinding.py) nor their models."""

    labeler = serializers.CharField(source="labeler.username")

    class Meta:
        model = Comparison
        fields = [
            "id",
            "lease_id",
            "task_id",
            "labeler",
            "winner",
            "notes",
            "time_spent_ms",
            "created_at",
        ]
        read_only_fields = fields


class ComparisonOutputSerializer(serializers.Serializer):
    completion = serializers.IntegerField(source="pk")
    model = serializers.CharField(source="model_version.name")
    text = serializers.CharField()


class ComparisonReviewSerializer(serializers.ModelSerializer):
    """A blind A/B judgement as reviewers read it: both outputs with the models behind them, in
    the sides the labeler saw (A: shown first)."""

    labeler = serializers.CharField(source="labeler.username")
    prompt_id = serializers.IntegerField(source="task.prompt_id")
    prompt = serializers.CharField(source="task.prompt.text", help_text="Its last user turn.")
    a = ComparisonOutputSerializer(source="a_completion")
    b = ComparisonOutputSerializer(source="b_completion")
    winner = serializers.CharField(help_text="a, b, tie or both_bad.")

    class Meta:
        model = Comparison
        fields = [
            "id", "task_id", "prompt_id", "prompt", "labeler", "a", "b", "winner", "notes",
            "time_spent_ms", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class TaskOutputSerializer(serializers.Serializer):
    completion = serializers.IntegerField(source="completion_id")
    position = serializers.IntegerField()
    model = serializers.CharField(source="completion.model_version.name")
    text = serializers.CharField(source="completion.text")


class TaskReviewSerializer(serializers.ModelSerializer):
    """A task as reviewers see it: its prompt, and its outputs with the model behind each."""

    prompt = serializers.CharField(source="prompt.text", help_text="Its last user turn.")
    split = serializers.CharField(source="prompt.split")
    completions = TaskOutputSerializer(source="task_completions", many=True)

    class Meta:
        model = Task
        fields = [
            "id", "kind", "prompt_id", "prompt", "split", "overlap", "priority", "done",
            "completions", "created_at",
        ]  # fmt: skip
        read_only_fields = fields
