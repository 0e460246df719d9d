"""Training runs and rounds: the database row is the truth about a job (status, config, data,
progress, what it produced). The labeling app knows nothing of these tables: every link between a
run and the human side (the model version it registered, the completions it sampled) is stored
here, pointing into labeling."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RunKind(models.TextChoices):
    SFT = "sft", "Supervised fine-tuning"
    REWARD = "reward", "Reward model"
    PPO = "ppo", "PPO"
    SAMPLE = "sample", "Sampling"
    DPO = "dpo", "DPO (from rankings, no reward model)"
    CRITIC_FREE = "critic_free", "Critic-free RL (GRPO, RLOO, REINFORCE++-baseline)"


class TrainingRun(models.Model):
    Kind = RunKind
    Status = RunStatus

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="training_runs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    config = models.JSONField(
        default=dict,
        help_text="The resolved config it runs with: every setting, defaults included (not the"
        " server-set paths).",
    )
    dataset = models.JSONField(
        default=dict, help_text="Exactly which rows it trains on: ids of demonstrations/rankings."
    )
    base_model = models.ForeignKey(
        "labeling.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    reward_model = models.ForeignKey(
        "labeling.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    attempt = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    lease_owner = models.CharField(max_length=200, blank=True)
    ran_on = models.CharField(
        max_length=200,
        blank=True,
        help_text="The worker (host:pid:task) that took its last attempt; kept once it finished.",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its message was last sent to the broker."
    )
    dispatches = models.PositiveSmallIntegerField(
        default=0, help_text="Messages sent for it while queued (re-sent by beat when none came)."
    )
    dispatch_error = models.TextField(
        blank=True, help_text="Why the last message could not be sent (broker unreachable)."
    )
    queue = models.CharField(
        max_length=64,
        blank=True,
        help_text="The GPU queue it is sent to (one per GPU type); blank: the default one.",
    )
    error = models.TextField(blank=True)
    model_version = models.OneToOneField(
        "labeling.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_run",
        help_text="The version it registered: one run registers exactly one version.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=RunKind.values), name="run_kind_valid"),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(step__lte=models.F("total_steps")) | Q(total_steps=0),
                name="run_step_within_total",
            ),
        ]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


class RunMetric(models.Model):
    """One logged value at one step: the curves the browser plots."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=64)
    value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "name", "step"], name="metric_once_per_step")
        ]
        indexes = [models.Index(fields=["run", "name", "step"])]

    def __str__(self) -> str:
        return f"{self.name}={self.value} at step {self.step} of run {self.run_id}"


class RunSample(models.Model):
    """A completion a sampling run produced: its provenance, on the machine side."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="samples")
    completion = models.OneToOneField(
        "labeling.Completion", on_delete=models.CASCADE, related_name="run_sample"
    )

    def __str__(self) -> str:
        return f"completion {self.completion_id} sampled by run {self.run_id}"


class RoundStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RoundStage(models.TextChoices):
    REWARD = "reward", "Reward model"
    POLICY = "policy", "Training the new policy"
    SAMPLE = "sample", "Sampling into the queue"
    DONE = "done", "Done"


class Recipe(models.TextChoices):
    """What a round does between its start policy and the samples it puts back in the queue."""

    INSTRUCTGPT = "instructgpt", "InstructGPT: reward model, PPO, sample"
    CRITIC_FREE = "critic_free", "Critic-free: reward model, GRPO / RLOO / REINFORCE++, sample"
    ITERATED_DPO = "iterated_dpo", "Iterated DPO: DPO on every ranking so far, sample"


class Round(models.Model):
    """One turn of the loop: reward model on all rankings so far → PPO → samples back in the queue.

    A round is an ordered recipe of steps, each a TrainingRun (RoundStep); it advances when a
    step's run succeeds, and stops with the step's reason when one fails (the runs, data and
    models made so far stay).
    """

    Status = RoundStatus
    Stage = RoundStage

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.REWARD)
    policy = models.ForeignKey(
        "labeling.ModelVersion",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Start policy.",
    )
    recipe = models.CharField(max_length=16, choices=Recipe.choices, default=Recipe.INSTRUCTGPT)
    config = models.JSONField(default=dict, help_text="Per-stage overrides and the gate.")
    queue = models.CharField(
        max_length=64,
        blank=True,
        help_text="The GPU queue every step's run is sent to (one per GPU type); blank: the"
        " default one.",
    )
    new_policy = models.ForeignKey(
        "labeling.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    gate = models.JSONField(default=dict, blank=True, help_text="The gate's checks and verdict.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_number_unique"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status="running"),
                name="round_one_running_per_project",
            ),
            models.CheckConstraint(
                condition=Q(status__in=RoundStatus.values), name="round_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(stage__in=RoundStage.values), name="round_stage_valid"
            ),
            models.CheckConstraint(
                condition=Q(recipe__in=Recipe.values), name="round_recipe_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"round {self.number} of {self.project_id} ({self.status}, {self.stage})"

    def runs(self, role: str) -> models.QuerySet[TrainingRun]:
        """The runs of this round's steps in `role`, in recipe order."""
        return TrainingRun.objects.filter(round_step__round=self, round_step__role=role).order_by(
            "round_step__position"
        )

    @property
    def reward_run(self) -> TrainingRun | None:
        return self.runs(StepRole.REWARD).first()

    @property
    def policy_run(self) -> TrainingRun | None:
        """The step that trained the new policy (PPO, critic-free RL or DPO)."""
        return self.runs(StepRole.POLICY).first()

    @property
    def baseline_run(self) -> TrainingRun | None:
        """SFT continued from the start policy for the policy step's budget (None: not asked)."""
        return self.runs(StepRole.BASELINE).first()


class StepRole(models.TextChoices):
    REWARD = "reward", "Reward model"
    POLICY = "policy", "New policy"  # PPO, critic-free RL or DPO, as the recipe says
    BASELINE = "baseline", "Compute-matched SFT"  # SFT continued for the policy step's budget
    SAMPLE = "sample", "Sampling"


class RoundStep(models.Model):
    """One step of a round's recipe: the run that did it and the role it played there."""

    Role = StepRole

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, related_name="round_step")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["round", "position"], name="round_step_position"),
            models.CheckConstraint(
                condition=Q(role__in=StepRole.values), name="round_step_role_valid"
            ),
        ]
        ordering = ["position"]

    def __str__(self) -> str:
        return f"step {self.position} ({self.role}) of round {self.round_id}: run {self.run_id}"


class SourceKind(models.TextChoices):
    DIRECTORY = "directory", "A directory under the models root"
    HUB = "hub", "A hub name (downloaded by the worker)"
    GGUF = "gguf", "A GGUF file under the models root (dequantised once)"


class RegistrationStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    VALIDATING = "validating", "Being copied and checked"
    READY = "ready", "Registered"
    FAILED = "failed", "Refused"


class ModelRegistration(models.Model):
    """An admin's request to bring a base model in. A worker copies (downloads, dequantises) it
    into the model root and checks it; only then does a ModelVersion exist, so a refused model
    leaves nothing a run could pick."""

    SourceKind = SourceKind
    Status = RegistrationStatus

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="model_registrations"
    )
    name = models.CharField(max_length=120, help_text="The model version's name, once registered.")
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices)
    source = models.CharField(
        max_length=500, help_text="Path under the models root (directory, GGUF) or a hub name."
    )
    revision = models.CharField(max_length=100, blank=True, help_text="Hub revision (optional).")
    default_chat_template = models.TextField(
        blank=True, help_text="Used only when the model's tokenizer has no chat template."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=RegistrationStatus.PENDING
    )
    error = models.TextField(blank=True)
    info = models.JSONField(
        default=dict, blank=True, help_text="Architecture, parameters, dtype, size, tokenizer."
    )
    model_version = models.OneToOneField(
        "labeling.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="registration",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(source_kind__in=SourceKind.values), name="registration_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RegistrationStatus.values), name="registration_status_valid"
            ),
            # One live registration per name: a refused one may be tried again under its name.
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=~Q(status="failed"),
                name="registration_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"registration of {self.name} ({self.status})"


class ReviewSnapshot(models.Model):
    """The reviewer dashboard's aggregates for a project, as of a watermark (training/review.py).

    The dashboard is computed from these counts, not from the judgements, so a page at 10^6
    comparisons renders in milliseconds; the snapshot is refreshed in the background (or inline
    for a small project) and the page says how fresh it is.
    """

    project = models.OneToOneField(
        "labeling.Project", on_delete=models.CASCADE, related_name="review_snapshot"
    )
    computed_at = models.DateTimeField(null=True, blank=True, help_text="When counting began.")
    comparisons_upto = models.BigIntegerField(
        default=0, help_text="Watermark: comparisons with an id up to this one are counted."
    )
    entries_upto = models.BigIntegerField(
        default=0, help_text="Watermark: ranking entries with an id up to this one are counted."
    )
    comparisons = models.PositiveIntegerField(default=0, help_text="Comparisons counted.")
    entries = models.PositiveIntegerField(default=0, help_text="Ranked outputs counted.")
    data = models.JSONField(default=dict, blank=True, help_text="The aggregates and the fits.")
    requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When a background recompute was last asked for."
    )

    def __str__(self) -> str:
        return f"review snapshot of project {self.project_id} at {self.computed_at}"

    @property
    def computing(self) -> bool:
        """A background recompute was asked for after the figures were computed."""
        return self.requested_at is not None and (
            self.computed_at is None or self.requested_at > self.computed_at
        )
