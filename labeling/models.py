"""Labeling data: projects, prompts, completions, the task queue and what labelers submit.

Invariants live in the database (unique and check constraints) so that no code path, admin
shell or second process can break them. The queue's locking rules live in labeling/queue.py.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length, Trim

MAX_PROMPT_CHARS = 32_000
MAX_RESPONSE_CHARS = 32_000
MAX_K = 9

# InstructGPT's per-output metadata (Ouyang et al. 2022, appendix B / table 3).
FLAG_CHOICES: list[tuple[str, str]] = [
    ("fails_to_follow", "Fails to follow the instruction"),
    ("hallucination", "Hallucination (makes up information)"),
    ("inappropriate_customer_assistant", "Inappropriate for a customer assistant"),
    ("satisfies_constraint", "Satisfies the constraint in the instruction"),
    ("sexual", "Sexual content"),
    ("violent", "Violent content"),
    ("encourages_harm", "Encourages violence, abuse, terrorism or self-harm"),
    ("denigrates_protected_class", "Denigrates a protected class"),
    ("harmful_advice", "Gives harmful advice"),
    ("opinion", "Expresses an opinion"),
    ("moral_judgment", "Expresses a moral judgment"),
]
FLAG_CODES = frozenset(code for code, _ in FLAG_CHOICES)
DEFAULT_FLAGS = [
    "fails_to_follow",
    "hallucination",
    "inappropriate_customer_assistant",
    "satisfies_constraint",
    "harmful_advice",
]


def default_flags() -> list[str]:
    return list(DEFAULT_FLAGS)


class Role(models.TextChoices):
    LABELER = "labeler", "Labeler"
    REVIEWER = "reviewer", "Reviewer"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.LABELER: 1, Role.REVIEWER: 2, Role.ADMIN: 3}


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALID = "valid", "Validation"
    TEST = "test", "Test"


class Project(models.Model):
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown beside every task.")
    k = models.PositiveSmallIntegerField(default=4, help_text="Outputs per ranking task (2-9).")
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Labelers per ranking task.")
    demo_overlap = models.PositiveSmallIntegerField(
        default=1, help_text="Demonstrations collected per prompt."
    )
    flags = models.JSONField(
        default=default_flags,
        blank=True,
        help_text="Metadata flags asked per output (may be none).",
    )
    lease_seconds = models.PositiveIntegerField(default=900)
    valid_percent = models.PositiveSmallIntegerField(default=10)
    test_percent = models.PositiveSmallIntegerField(default=10)
    base_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(k__gte=2, k__lte=MAX_K), name="project_k_2_to_9"),
            models.CheckConstraint(
                condition=Q(overlap__gte=1, overlap__lte=50), name="project_overlap"
            ),
            models.CheckConstraint(
                condition=Q(demo_overlap__gte=1, demo_overlap__lte=50), name="project_demo_overlap"
            ),
            models.CheckConstraint(condition=Q(lease_seconds__gte=30), name="project_lease_min"),
            models.CheckConstraint(
                condition=Q(valid_percent__lte=100, test_percent__lte=100)
                & Q(valid_percent__lte=100 - models.F("test_percent")),
                name="project_split_percents",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.LABELER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
            models.CheckConstraint(
                condition=Q(role__in=[r.value for r in Role]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"

    def allows(self, role: str) -> bool:
        """Roles nest: an admin may do what a reviewer does, a reviewer what a labeler does."""
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text='[{"role": "user", "content": "..."}, ...]')
    text = models.TextField(help_text="The last user turn, for lists and search.")
    content_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    author = models.CharField(
        max_length=200, blank=True, help_text="Who wrote the prompt (imports); split is per author."
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_text"),
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=~Q(external_id=""),
                name="prompt_unique_external_id",
            ),
            models.CheckConstraint(
                condition=Q(split__in=[s.value for s in Split]), name="prompt_split_valid"
            ),
            models.CheckConstraint(condition=Q(text__regex=r"\S"), name="prompt_text_not_blank"),
        ]
        indexes = [models.Index(fields=["project", "split"])]

    def __str__(self) -> str:
        return self.text[:60]


class ModelKind(models.TextChoices):
    BASE = "base", "Base"
    SFT = "sft", "SFT policy"
    REWARD = "reward", "Reward model"
    POLICY = "policy", "Policy (PPO, critic-free RL or DPO)"
    EXTERNAL = "external", "External (imported completions)"


class ModelVersion(models.Model):
    Kind = ModelKind

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Relative to settings.MODEL_ROOT for models we train; a hub name or absolute path only for
    # base models an admin registers on the server. Never taken from a request body.
    path = models.CharField(max_length=500, blank=True)
    # Where the version's files were published (training/artifacts.py; `path` is their key there)
    # and the sha256 of their manifest, which vouches for every file. Both blank: a version from
    # before the artifact store, or a hub name; its files are read under MODEL_ROOT as before.
    artifact_uri = models.CharField(max_length=1000, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_version_unique_name"),
            models.CheckConstraint(
                condition=Q(kind__in=ModelKind.values), name="model_version_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(artifact_uri="", sha256="")
                | (~Q(artifact_uri="") & Q(sha256__regex=r"^[0-9a-f]{64}$")),
                name="model_version_artifact_hashed",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Completion(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="completions"
    )
    text = models.TextField()
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    finished = models.BooleanField(null=True, help_text="Ended with EOS (None: unknown).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(temperature__isnull=True) | Q(temperature__gte=0),
                name="completion_temp",
            ),
            models.CheckConstraint(
                condition=Q(top_p__isnull=True) | Q(top_p__gt=0, top_p__lte=1),
                name="completion_top_p",
            ),
        ]

    def __str__(self) -> str:
        return self.text[:60]


class TaskKind(models.TextChoices):
    DEMONSTRATION = "demonstration", "Demonstration"
    RANKING = "ranking", "Ranking"
    COMPARISON = "comparison", "Blind A/B comparison"


class Task(models.Model):
    """One unit of the queue: write a demonstration for a prompt, or rank K completions of it."""

    Kind = TaskKind

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    overlap = models.PositiveSmallIntegerField(help_text="How many labelers must answer it.")
    priority = models.SmallIntegerField(default=0, help_text="Higher is served first.")
    completions: models.ManyToManyField[Completion, TaskCompletion] = models.ManyToManyField(
        Completion, through="TaskCompletion", related_name="tasks", blank=True
    )
    done = models.BooleanField(default=False, help_text="All overlap slots submitted.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="task_overlap_positive"),
            models.CheckConstraint(condition=Q(kind__in=TaskKind.values), name="task_kind_valid"),
            models.UniqueConstraint(
                fields=["prompt"],
                condition=Q(kind="demonstration"),
                name="task_one_demonstration_task_per_prompt",
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "kind", "-priority", "id"],
                condition=Q(done=False),
                name="task_open_queue",
            ),
            # The tasks more than one labeler answers: labeler agreement reads only these
            # (statements.AGREEMENT_PAIRS).
            models.Index(fields=["project"], condition=Q(overlap__gt=1), name="task_shared"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} task {self.pk}"


class TaskCompletion(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="task_completions")
    completion = models.ForeignKey(Completion, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "completion"], name="task_completion_unique"),
            models.UniqueConstraint(fields=["task", "position"], name="task_position_unique"),
        ]
        ordering = ["position"]

    def __str__(self) -> str:
        return f"task {self.task_id} shows completion {self.completion_id} at {self.position}"


class LeaseStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    RELEASED = "released", "Released"


class Lease(models.Model):
    """A labeler's hold on a task. Counts against overlap while active and unexpired, or submitted.

    One row per (task, user) ever: a labeler never gets the same task twice; an expired lease of
    theirs is re-activated in place if a slot is free.
    """

    Status = LeaseStatus

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="leases")
    # No index of its own: a labeler's leases are read per task (the unique (task, user)
    # index) or, for their active and skipped ones, through the partial indexes below. An index
    # on user alone let PostgreSQL, misled by statistics from when a labeler had few leases,
    # probe it for the claim's per-task lookup: every probe then read all of the labeler's
    # leases (a claim at 900 of them took 69 ms instead of 1).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases", db_index=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    shown_order = models.JSONField(
        default=list, blank=True, help_text="Completion ids in the order this labeler sees them."
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            # INCLUDE status (PostgreSQL): the claim's per-candidate probe of the user's lease
            # (statements.MINE) is then one index-only lookup.
            models.UniqueConstraint(
                fields=["task", "user"], include=["status"], name="lease_once_per_task_and_user"
            ),
            models.CheckConstraint(
                condition=Q(status__in=LeaseStatus.values), name="lease_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status="submitted", submitted_at__isnull=False)
                | ~Q(status="submitted"),
                name="lease_submitted_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["task", "status", "expires_at"]),
            # A labeler's active leases (a few), without their finished history (tens of
            # thousands): statements.HELD at every claim, and the home page.
            models.Index(
                fields=["user"], condition=Q(status="active"), name="lease_active_by_user"
            ),
            # "Skipped today" on the labeler's home page.
            models.Index(
                fields=["user", "expires_at"],
                condition=Q(status="skipped"),
                name="lease_skipped_by_user",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} on task {self.task_id} for user {self.user_id} ({self.status})"


class Demonstration(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations"
    )
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="demonstration")
    text = models.TextField()
    time_spent_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "labeler"], name="demonstration_once_per_labeler"
            ),
            models.CheckConstraint(condition=Q(text__regex=r"\S"), name="demonstration_not_blank"),
            models.CheckConstraint(
                condition=models.lookups.LessThanOrEqual(Length("text"), MAX_RESPONSE_CHARS),
                name="demonstration_max_length",
            ),
        ]
        # A labeler's demonstrations today (home page) without reading all of theirs.
        indexes = [models.Index(fields=["labeler", "created_at"], name="demonstration_by_labeler")]

    def __str__(self) -> str:
        return f"demonstration {self.pk} by {self.labeler_id}"


class DemonstrationDraft(models.Model):
    """Autosaved text while a labeler writes; deleted when the demonstration is submitted."""

    lease = models.OneToOneField(Lease, on_delete=models.CASCADE, related_name="draft")
    text = models.TextField(blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.lookups.LessThanOrEqual(Length("text"), MAX_RESPONSE_CHARS),
                name="draft_max_length",
            )
        ]

    def __str__(self) -> str:
        return f"draft for lease {self.lease_id}"


class Ranking(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="rankings")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="ranking")
    none_acceptable = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    shown_order = models.JSONField(help_text="Completion ids in the order they were shown.")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "labeler"], name="ranking_once_per_labeler"),
            models.CheckConstraint(
                condition=models.lookups.LessThanOrEqual(Length(Trim("notes")), 5000),
                name="ranking_notes_max_length",
            ),
        ]
        indexes = [
            # The reviewer page's "rankings in the last 7 days" reads only that week.
            models.Index(fields=["created_at"], name="ranking_created"),
            # A labeler's rankings today (home page) without reading all of theirs.
            models.Index(fields=["labeler", "created_at"], name="ranking_by_labeler"),
        ]

    def __str__(self) -> str:
        return f"ranking {self.pk} by {self.labeler_id}"


class RankingEntry(models.Model):
    """One completion's place in a ranking: rank 1 is best, equal ranks are ties."""

    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="entries")
    completion = models.ForeignKey(Completion, on_delete=models.PROTECT, related_name="+")
    rank = models.PositiveSmallIntegerField()
    likert = models.PositiveSmallIntegerField()
    flags = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ranking", "completion"], name="entry_unique_completion"
            ),
            models.CheckConstraint(
                condition=Q(rank__gte=1, rank__lte=MAX_K), name="entry_rank_range"
            ),
            models.CheckConstraint(
                condition=Q(likert__gte=1, likert__lte=7), name="entry_likert_1_7"
            ),
        ]
        ordering = ["rank", "id"]

    def __str__(self) -> str:
        return f"completion {self.completion_id}: rank {self.rank}, likert {self.likert}"


class Winner(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "About the same"
    BOTH_BAD = "both_bad", "Both are bad"


class Comparison(models.Model):
    """A blind pairwise judgement: which of two models' outputs for one prompt is better.

    Side A is the first completion of the lease's shown_order, which was shuffled per labeler
    when the task was leased, so the side each model got is random and stored.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="comparisons")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="comparisons"
    )
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="comparison")
    a_completion = models.ForeignKey(Completion, on_delete=models.PROTECT, related_name="+")
    b_completion = models.ForeignKey(Completion, on_delete=models.PROTECT, related_name="+")
    winner = models.CharField(max_length=16, choices=Winner.choices)
    notes = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "labeler"], name="comparison_once_per_labeler"),
            models.CheckConstraint(
                condition=Q(winner__in=Winner.values), name="comparison_winner_valid"
            ),
            models.CheckConstraint(
                condition=~Q(a_completion=models.F("b_completion")), name="comparison_two_sides"
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk}: {self.winner}"


# --- counters the database keeps (labeling/tally.py) --------------------------------------------


class TaskTally(models.Model):
    """Per project, task kind and shard: how many tasks, how many done, how many submissions they
    want (the sum of their overlap). Kept by PostgreSQL triggers on labeling_task (migration
    labeling 0010), so that the progress page reads at most 16 rows a kind instead of counting
    every task. A task counts in shard `id % 16`: the submit that marks a task done updates one
    of 16 rows, so concurrent submits seldom wait on the same counter. SQLite keeps none and
    counts (labeling/tally.py)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    shard = models.PositiveSmallIntegerField()
    tasks = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    wanted = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "shard"], name="task_tally_key")
        ]

    def __str__(self) -> str:
        return f"{self.kind} tasks of project {self.project_id}, shard {self.shard}"


class LabelerTally(models.Model):
    """Per project, labeler and task kind: leases submitted and skipped. Kept by PostgreSQL
    triggers on labeling_lease (migration labeling 0010): the reviewer page and progress sum
    these rows instead of joining every lease to its task. One row per labeler, so only that
    labeler's own transactions ever wait on it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    submitted = models.IntegerField(default=0)
    skipped = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user", "kind"], name="labeler_tally_key")
        ]

    def __str__(self) -> str:
        return f"{self.kind} leases of user {self.user_id} in project {self.project_id}"
