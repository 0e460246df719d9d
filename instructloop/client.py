"""A Python client for InstructLoop's JSON API (/api/v1/), for scripts and notebooks.

    from instructloop.client import Client

    client = Client.login("https://labels.example.com", "admin", "password")
    project = client.project("demo")
    client.import_prompts(project, [{"prompt": "Write a haiku about rain."}])
    round_ = client.wait_round(project, client.start_round(project, policy="sft-1").number)
    for w in client.evaluation(project).win_rates:
        print(w.model, w.rate, (w.low, w.high))

What it does for you:
- token authentication (`Client(url, token)` or `Client.login(url, username, password)`);
- retries on 503 (the database is unavailable) and 429 (a locked-out login) after the server's
  Retry-After (seconds or an HTTP date), at most `retries` times, never waiting longer than
  `max_wait` at once: a longer Retry-After (a 15-minute lockout) is raised at once as an ApiError,
  not slept through. A 503 or 429 means the server did not act, so any method is retried then.
  A connection that could not be opened is retried for any method too (nothing reached the
  server); a connection that failed later (a read timeout, a cut) only for GET, PUT and DELETE,
  since a POST may have been carried out (`ApiError` is never raised for those: httpx's error is);
- every error answer raises ApiError(status, detail, errors) with the server's message;
- typed results: frozen dataclasses built from the JSON (their fields are checked against the
  OpenAPI schema by tests/client/test_schema.py), and paged lists as iterators that follow `next`.

It imports neither Django nor anything of the server: it needs only httpx.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

__all__ = [
    "Agreement",
    "ApiError",
    "Client",
    "Comparison",
    "Completion",
    "Evaluation",
    "EvaluationTasks",
    "ImportResult",
    "Invitation",
    "JobFailed",
    "KindProgress",
    "Labeler",
    "Lineage",
    "Member",
    "ModelVersion",
    "Progress",
    "Project",
    "Rating",
    "Registration",
    "Round",
    "Run",
    "Task",
    "WinRate",
]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """An error answer: its status, the server's `detail` and, where given, `errors` (e.g. an
    import's bad lines by number, or a field's problems)."""

    def __init__(
        self, status: int, detail: str, errors: Any = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {detail}" + (f" {errors!r}" if errors else ""))
        self.status = status
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after


class JobFailed(Exception):
    """A run or round that ended failed or cancelled; `job` is it, `job.error` the reason."""

    def __init__(self, job: Run | Round) -> None:
        what = f"run {job.id}" if isinstance(job, Run) else f"round {job.number}"
        super().__init__(f"{what} {job.status}: {job.error or 'no reason given'}")
        self.job = job


# --- typed results --------------------------------------------------------------------------

T = TypeVar("T")


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _plain(cls: type[T], data: Mapping[str, Any], **converted: Any) -> T:
    """cls from a JSON object: each field by its name; `*_at` fields as datetimes."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in converted:
            values[f.name] = converted[f.name]
        elif f.name.endswith("_at"):
            values[f.name] = _when(data.get(f.name))
        else:
            values[f.name] = data.get(f.name)
    return cls(**values)


@dataclass(frozen=True, slots=True)
class Project:
    """A project as you see it, with your role in it."""

    __schema__: ClassVar[str] = "Project"
    id: int
    name: str
    slug: str
    guidelines: str
    k: int
    overlap: int
    demo_overlap: int
    flags: list[str]
    lease_seconds: int
    valid_percent: int
    test_percent: int
    created_at: datetime
    role: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Project:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Member:
    __schema__: ClassVar[str] = "Member"
    user_id: int
    username: str
    role: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Member:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Invitation:
    """Someone invited: a member already, with the link where they set their first password
    (it works once and expires; send it to them yourself)."""

    __schema__: ClassVar[str] = "MemberInvited"
    user_id: int
    username: str
    role: str
    invite_link: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Invitation:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class ImportResult:
    __schema__: ClassVar[str] = "ImportResult"
    created: int
    tasks_created: int
    splits: dict[str, int]  # new prompts per split; test prompts get no demonstration task

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImportResult:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class HeldOutAccuracy:
    """A reward model's accuracy on held-out pairs, with its n and 95% Wilson interval."""

    __schema__: ClassVar[str] = "HeldOutAccuracy"
    accuracy: float
    pairs: int
    rankings: int | None
    low: float
    high: float
    excludes_chance: bool
    enough_pairs: bool
    pairs_needed: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> HeldOutAccuracy | None:
        return None if data is None else _plain(cls, data)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    __schema__: ClassVar[str] = "ModelVersion"
    id: int
    name: str
    kind: str
    parent: int | None
    metrics: dict[str, Any]
    held_out_accuracy: HeldOutAccuracy | None
    artifact_uri: str  # where its files are (file://... or s3://...); blank: from before the store
    sha256: str  # of its manifest, which lists every file's sha256
    created_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelVersion:
        held_out = HeldOutAccuracy.from_json(data.get("held_out_accuracy"))
        return _plain(cls, data, held_out_accuracy=held_out)


@dataclass(frozen=True, slots=True)
class Registration:
    """A base model being registered: a worker copies and checks it (status), then it is a model
    version (model_version, its id)."""

    __schema__: ClassVar[str] = "Registration"
    id: int
    name: str
    source_kind: str
    source: str
    revision: str
    status: str
    error: str
    info: dict[str, Any]
    model_version: int | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Registration:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class MetricPoint:
    __schema__: ClassVar[str] = "MetricPoint"
    name: str
    step: int
    value: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricPoint:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Run:
    """A training run. `metrics` and `next_since` come with a run read on its own
    (`Client.run`): its metric points after `since`, and the step to poll from next."""

    __schema__: ClassVar[str] = "Run"
    # The detail answer's fields besides the run itself (its component, the field holding the run).
    __schema_detail__: ClassVar[tuple[str, str]] = ("RunDetail", "run")
    id: int
    kind: str
    status: str
    config: dict[str, Any]
    base_model: str | None
    reward_model: str | None
    model_version: str | None
    step: int
    total_steps: int | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    error: str
    queue: str  # the GPU queue it was sent to; "": the deployment's default (first) one
    ran_on: str  # the worker (host:pid:task) that took its last attempt
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    metrics: tuple[MetricPoint, ...] = ()
    next_since: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        return _plain(cls, data, metrics=(), next_since=None)

    @classmethod
    def from_detail(cls, data: Mapping[str, Any]) -> Run:
        metrics = tuple(MetricPoint.from_json(m) for m in data["metrics"])
        return _plain(cls, data["run"], metrics=metrics, next_since=data["next_since"])


@dataclass(frozen=True, slots=True)
class RoundStep:
    __schema__: ClassVar[str] = "RoundStep"
    label: str
    run: Run | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundStep:
        run = data.get("run")
        return cls(label=data["label"], run=None if run is None else Run.from_json(run))


@dataclass(frozen=True, slots=True)
class WinRate:
    """A model's win rate over a baseline in blind A/B judgements, with its 95% interval
    (bootstrap, clustered by prompt); rate, low and high are None with no judgements."""

    __schema__: ClassVar[str] = "WinRate"
    model: str
    baseline: str
    n: int
    wins: int
    losses: int
    ties: int
    rate: float | None
    low: float | None
    high: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WinRate:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A judged round: the new policy over its start policy and over the compute-matched SFT."""

    __schema__: ClassVar[str] = "RoundResult"
    number: int
    recipe: str
    over_start: WinRate
    over_baseline: WinRate | None
    baseline: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RoundResult | None:
        if data is None:
            return None
        over_baseline = data.get("over_baseline")
        return _plain(
            cls,
            data,
            over_start=WinRate.from_json(data["over_start"]),
            over_baseline=None if over_baseline is None else WinRate.from_json(over_baseline),
        )


@dataclass(frozen=True, slots=True)
class Round:
    """A round. `steps` (each step's run) and `results` (once judged) come with a round read on
    its own (`Client.round`, `Client.wait_round`)."""

    __schema__: ClassVar[str] = "Round"
    __schema_detail__: ClassVar[tuple[str, str]] = ("RoundDetail", "round")
    number: int
    recipe: str
    status: str
    stage: str
    policy: str | None
    new_policy: str | None
    config: dict[str, Any]
    queue: str  # the GPU queue every step's run goes to; "": the default one
    gate: dict[str, Any]
    error: str
    created_at: datetime
    finished_at: datetime | None
    steps: tuple[RoundStep, ...] = ()
    results: RoundResult | None = None

    @property
    def id(self) -> int:
        return self.number

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Round:
        return _plain(cls, data, steps=(), results=None)

    @classmethod
    def from_detail(cls, data: Mapping[str, Any]) -> Round:
        steps = tuple(RoundStep.from_json(s) for s in data["steps"])
        results = RoundResult.from_json(data.get("results"))
        return _plain(cls, data["round"], steps=steps, results=results)


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a model version came from: parent, the run with its resolved config, the rows."""

    __schema__: ClassVar[str] = "ModelLineage"
    model: ModelVersion
    parent: str | None
    run: Run | None
    dataset: dict[str, Any]
    registration: Registration | None
    children: list[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lineage:
        run, registration = data.get("run"), data.get("registration")
        return _plain(
            cls,
            data,
            model=ModelVersion.from_json(data["model"]),
            run=None if run is None else Run.from_json(run),
            registration=None if registration is None else Registration.from_json(registration),
        )


@dataclass(frozen=True, slots=True)
class Rating:
    """Bradley–Terry rating on the Elo scale (baseline 1000), with its 95% interval."""

    __schema__: ClassVar[str] = "Rating"
    model: str
    rating: float
    low: float
    high: float
    n: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rating:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Likert:
    __schema__: ClassVar[str] = "Likert"
    mean: float
    n: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Likert:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class RewardModelAccuracy:
    __schema__: ClassVar[str] = "RewardModel"
    model: str
    accuracy: float | None
    held_out: HeldOutAccuracy | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RewardModelAccuracy:
        return _plain(cls, data, held_out=HeldOutAccuracy.from_json(data.get("held_out")))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The evaluation dashboard's figures, as counted at `computed_at`."""

    __schema__: ClassVar[str] = "Evaluation"
    computed_at: datetime | None
    comparisons: int
    new_comparisons: int
    new_ranked_outputs: int
    computing: bool
    baseline: str | None
    win_rates: tuple[WinRate, ...]
    ratings: tuple[Rating, ...]
    ratings_length_controlled: tuple[Rating, ...]
    flag_rates: dict[str, dict[str, float]]
    likert: dict[str, Likert]
    reward_models: tuple[RewardModelAccuracy, ...]
    pairs_needed: int
    agreement: float | None
    rounds: tuple[RoundResult, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return _plain(
            cls,
            data,
            win_rates=tuple(WinRate.from_json(w) for w in data["win_rates"]),
            ratings=tuple(Rating.from_json(r) for r in data["ratings"]),
            ratings_length_controlled=tuple(
                Rating.from_json(r) for r in data["ratings_length_controlled"]
            ),
            likert={m: Likert.from_json(v) for m, v in data["likert"].items()},
            reward_models=tuple(RewardModelAccuracy.from_json(r) for r in data["reward_models"]),
            rounds=tuple(r for r in map(RoundResult.from_json, data["rounds"]) if r is not None),
        )


@dataclass(frozen=True, slots=True)
class KindProgress:
    __schema__: ClassVar[str] = "KindProgress"
    tasks: int
    done: int
    submitted: int
    wanted: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KindProgress:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Progress:
    __schema__: ClassVar[str] = "Progress"
    demonstration: KindProgress
    ranking: KindProgress

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        return cls(
            demonstration=KindProgress.from_json(data["demonstration"]),
            ranking=KindProgress.from_json(data["ranking"]),
        )


@dataclass(frozen=True, slots=True)
class Labeler:
    __schema__: ClassVar[str] = "LabelerRow"
    user_id: int
    username: str
    role: str
    demonstrations: int
    rankings: int
    rankings_last_7_days: int
    skips: int
    agreement: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Labeler:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Labelers' pairwise agreement: overall, per pair of labelers (user ids), per labeler."""

    __schema__: ClassVar[str] = "Agreement"
    overall: float | None
    comparisons: int
    pairs: dict[tuple[int, int], float]
    per_labeler: dict[int, float]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Agreement:
        return _plain(
            cls,
            data,
            pairs={tuple(p["labelers"]): p["agreement"] for p in data["pairs"]},
            per_labeler={p["labeler"]: p["agreement"] for p in data["per_labeler"]},
        )


@dataclass(frozen=True, slots=True)
class ComparisonOutput:
    """One side of a blind A/B judgement: the completion, the model behind it, its text."""

    __schema__: ClassVar[str] = "ComparisonOutput"
    completion: int
    model: str
    text: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComparisonOutput:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A blind A/B judgement as reviewers read it: both sides as the labeler saw them (a: shown
    first) with their models, and the winner (a, b, tie or both_bad)."""

    __schema__: ClassVar[str] = "ComparisonReview"
    id: int
    task_id: int
    prompt_id: int
    prompt: str
    labeler: str
    a: ComparisonOutput
    b: ComparisonOutput
    winner: str
    notes: str
    time_spent_ms: int
    created_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        a, b = ComparisonOutput.from_json(data["a"]), ComparisonOutput.from_json(data["b"])
        return _plain(cls, data, a=a, b=b)


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """One output of a task, at its position, with the model behind it (reviewers)."""

    __schema__: ClassVar[str] = "TaskOutput"
    completion: int
    position: int
    model: str
    text: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskOutput:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Task:
    """A task as reviewers see it (`Client.tasks`): its prompt and its outputs with models."""

    __schema__: ClassVar[str] = "TaskReview"
    id: int
    kind: str
    prompt_id: int
    prompt: str
    split: str
    overlap: int
    priority: int
    done: bool
    completions: tuple[TaskOutput, ...]
    created_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        outputs = tuple(TaskOutput.from_json(c) for c in data["completions"])
        return _plain(cls, data, completions=outputs)


@dataclass(frozen=True, slots=True)
class EvaluationTasks:
    """What `Client.create_evaluation_tasks` made."""

    __schema__: ClassVar[str] = "EvaluationTasksCreated"
    created: int
    skipped_identical: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluationTasks:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class EvaluationFreshness:
    """How fresh the evaluation figures are, and whether a worker is counting them again."""

    __schema__: ClassVar[str] = "EvaluationFreshness"
    computed_at: datetime | None
    new_comparisons: int
    new_ranked_outputs: int
    computing: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluationFreshness:
        return _plain(cls, data)


@dataclass(frozen=True, slots=True)
class Completion:
    """An output a model version sampled, with its prompt (`Client.completions`)."""

    __schema__: ClassVar[str] = "Completion"
    id: int
    prompt_id: int
    prompt: str
    split: str
    text: str
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    finished: bool | None
    created_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Completion:
        return _plain(cls, data)


# --- the client -----------------------------------------------------------------------------

ProjectRef = int | Project


def _pid(project: ProjectRef) -> int:
    return project.id if isinstance(project, Project) else int(project)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A Retry-After header's wait in seconds: a number of seconds or an HTTP date (RFC 9110);
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Client:
    """InstructLoop's /api/v1/ for a script: see the module's docstring.

    `retries`: how many times one call is retried (503, 429, a connection error as above);
    `max_wait`: the longest wait, in seconds, before one retry: a longer Retry-After is raised
    as an ApiError at once; `backoff`: the first wait when the server names none (doubling).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        max_wait: float = 60.0,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Token {token}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_wait = max_wait
        self.backoff = backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url + "/api/v1/",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def login(
        cls,
        base_url: str,
        username: str,
        password: str,
        *,
        name: str = "client",
        expires_in_days: int | None = None,
        **options: Any,
    ) -> Client:
        """A client with a new token for username (POST /auth/token/). A locked-out account or
        address is a 429: retried after Retry-After when that is within max_wait."""
        anonymous = cls(base_url, **options)
        body: dict[str, Any] = {"username": username, "password": password, "name": name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        try:
            token = anonymous._call("POST", "auth/token/", json=body)["token"]
        finally:
            anonymous.close()
        return cls(base_url, token, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport --------------------------------------------------------------------------

    def _send(
        self, method: str, url: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One call with its retries; an error answer raises ApiError."""
        attempt = 0
        while True:
            request = self._http.build_request(method, url, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                # ConnectError: nothing reached the server. Anything later: it may have acted.
                safe = method in IDEMPOTENT or isinstance(exc, httpx.ConnectError)
                if not safe or attempt >= self.retries:
                    raise
                attempt += 1
                self._sleep(min(self.backoff * 2 ** (attempt - 1), self.max_wait))
                continue
            if response.status_code < 400:
                return response
            if stream:
                response.read()
            error = _error(response)
            if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                raise error
            wait = error.retry_after
            if wait is None:
                wait = self.backoff * 2**attempt
            if wait > self.max_wait:
                raise error  # the server says not before then: a script should hear it now
            attempt += 1
            self._sleep(wait)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._send(method, url, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _paged(self, url: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every row of a limit/offset-paged list, following `next` page by page."""
        page = self._call("GET", url, params=dict(params or {}))
        if isinstance(page, list):  # an endpoint that answers every row at once
            yield from page
            return
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self._call("GET", page["next"])

    # --- projects and members -------------------------------------------------------------

    def projects(self, *, page_size: int | None = None) -> Iterator[Project]:
        params = {"limit": page_size} if page_size else None
        return (Project.from_json(p) for p in self._paged("projects/", params))

    def project(self, ref: int | str) -> Project:
        """A project by id, or by slug."""
        if isinstance(ref, int):
            return Project.from_json(self._call("GET", f"projects/{ref}/"))
        for project in self.projects():
            if project.slug == ref:
                return project
        raise ApiError(404, f"No project with slug {ref!r} among yours.")

    def create_project(self, name: str, slug: str, **settings: Any) -> Project:
        """settings: guidelines, k, overlap, demo_overlap, flags, lease_seconds, valid_percent,
        test_percent."""
        body = {"name": name, "slug": slug, **settings}
        return Project.from_json(self._call("POST", "projects/", json=body))

    def update_project(self, project: ProjectRef, **settings: Any) -> Project:
        """Change settings (admin): name, guidelines, k, overlap, demo_overlap, flags,
        lease_seconds, valid_percent, test_percent; only those given change."""
        url = f"projects/{_pid(project)}/"
        return Project.from_json(self._call("PATCH", url, json=settings))

    def members(self, project: ProjectRef) -> Iterator[Member]:
        return (Member.from_json(m) for m in self._paged(f"projects/{_pid(project)}/members/"))

    def set_member(self, project: ProjectRef, username: str, role: str) -> Member:
        body = {"username": username, "role": role}
        url = f"projects/{_pid(project)}/members/"
        return Member.from_json(self._call("POST", url, json=body))

    def invite_member(
        self, project: ProjectRef, username: str, *, role: str = "labeler", email: str = ""
    ) -> Invitation:
        """A new account without a password, a member at once, and its one-time invite link."""
        body = {"username": username, "role": role}
        if email:
            body["email"] = email
        url = f"projects/{_pid(project)}/invitations/"
        return Invitation.from_json(self._call("POST", url, json=body))

    def remove_member(self, project: ProjectRef, user_id: int) -> None:
        self._call("DELETE", f"projects/{_pid(project)}/members/{user_id}/")

    # --- imports --------------------------------------------------------------------------

    def import_prompts(
        self,
        project: ProjectRef,
        records: Iterable[Mapping[str, Any]] | None = None,
        *,
        file: str | Path | None = None,
        collect_demonstrations: bool = True,
    ) -> ImportResult:
        """Prompts from records ({"prompt": ...} or {"messages": [...]}, as a JSONL line) or a
        .jsonl/.csv file. All or nothing: an ApiError's `errors` lists every bad line."""
        url = f"projects/{_pid(project)}/prompts/import/"
        return self._import(url, records, file, collect_demonstrations=collect_demonstrations)

    def import_ranking_tasks(
        self,
        project: ProjectRef,
        records: Iterable[Mapping[str, Any]] | None = None,
        *,
        file: str | Path | None = None,
    ) -> ImportResult:
        """Ranking tasks: {prompt|messages, completions: [K outputs]} records, or a JSONL file."""
        return self._import(f"projects/{_pid(project)}/ranking-tasks/import/", records, file)

    def _import(
        self,
        url: str,
        records: Iterable[Mapping[str, Any]] | None,
        file: str | Path | None,
        **options: Any,
    ) -> ImportResult:
        if (records is None) == (file is None):
            raise ValueError("give records or file, not both")
        if file is not None:
            path = Path(file)
            form = {
                k: "true" if v is True else "false" if v is False else v for k, v in options.items()
            }
            answer = self._call(
                "POST", url, data=form, files={"file": (path.name, path.read_bytes())}
            )
        else:
            answer = self._call("POST", url, json={"records": list(records or ()), **options})
        return ImportResult.from_json(answer)

    # --- models ---------------------------------------------------------------------------

    def models(self, project: ProjectRef) -> Iterator[ModelVersion]:
        url = f"projects/{_pid(project)}/models/"
        return (ModelVersion.from_json(m) for m in self._paged(url))

    def model(self, project: ProjectRef, name_or_id: int | str) -> ModelVersion:
        for version in self.models(project):
            if name_or_id in (version.id, version.name):
                return version
        raise ApiError(404, f"No model version {name_or_id!r} in this project.")

    def lineage(self, project: ProjectRef, version: int | ModelVersion) -> Lineage:
        vid = version.id if isinstance(version, ModelVersion) else version
        return Lineage.from_json(self._call("GET", f"projects/{_pid(project)}/models/{vid}/"))

    def completions(
        self, project: ProjectRef, version: int | ModelVersion, *, split: str | None = None
    ) -> Iterator[Completion]:
        """The outputs a model version sampled, with their prompts (of one split if given)."""
        vid = version.id if isinstance(version, ModelVersion) else version
        url = f"projects/{_pid(project)}/models/{vid}/completions/"
        params = {"split": split} if split is not None else None
        return (Completion.from_json(c) for c in self._paged(url, params))

    def register_model(
        self,
        project: ProjectRef,
        name: str,
        *,
        source_kind: str,
        source: str,
        revision: str = "",
        default_chat_template: str = "",
    ) -> Registration:
        """Register a base model (admin): source_kind "directory" or "gguf" (a path under the
        server's models root) or "hub"; a worker copies and checks it (`wait_registration`)."""
        body = {
            "name": name,
            "source_kind": source_kind,
            "source": source,
            "revision": revision,
            "default_chat_template": default_chat_template,
        }
        url = f"projects/{_pid(project)}/model-registrations/"
        return Registration.from_json(self._call("POST", url, json=body))

    def registration(self, project: ProjectRef, registration_id: int) -> Registration:
        url = f"projects/{_pid(project)}/model-registrations/{registration_id}/"
        return Registration.from_json(self._call("GET", url))

    def wait_registration(
        self, project: ProjectRef, registration_id: int, *, timeout: float = 3600
    ) -> Registration:
        """Poll until the registration is ready (returned) or refused (ApiError 400, its reason)."""
        found = self._poll(
            lambda: self.registration(project, registration_id),
            lambda r: r.status in {"ready", "failed"},
            timeout,
        )
        if found.status == "failed":
            raise ApiError(400, f"Registration {found.name!r} refused: {found.error}")
        return found

    # --- runs -----------------------------------------------------------------------------

    def runs(self, project: ProjectRef) -> Iterator[Run]:
        return (Run.from_json(r) for r in self._paged(f"projects/{_pid(project)}/runs/"))

    def run(self, project: ProjectRef, run_id: int, *, since: int = -1) -> Run:
        """A run with its metric points after step `since`; poll again from `run.next_since`."""
        url = f"projects/{_pid(project)}/runs/{run_id}/"
        params = {"since": since} if since != -1 else None
        return Run.from_detail(self._call("GET", url, params=params))

    def start_run(
        self,
        project: ProjectRef,
        kind: str,
        base_model: str,
        *,
        reward_model: str | None = None,
        config: Mapping[str, Any] | None = None,
        queue: str | None = None,
    ) -> Run:
        """Launch a run (admin): kind sft, reward, ppo, critic_free, dpo or sample; models by
        name; config checked by the stage's config class (a 400 names a wrong setting); `queue`
        the GPU queue (GPU type) it runs on, one the server declares (None: its default)."""
        body: dict[str, Any] = {
            "kind": kind,
            "base_model": base_model,
            "config": dict(config or {}),
        }
        if reward_model is not None:
            body["reward_model"] = reward_model
        if queue is not None:
            body["queue"] = queue
        return Run.from_json(self._call("POST", f"projects/{_pid(project)}/runs/", json=body))

    def sample(
        self,
        project: ProjectRef,
        model: str,
        *,
        config: Mapping[str, Any] | None = None,
        queue: str | None = None,
    ) -> Run:
        """Sample a model version's outputs into ranking tasks (a run of kind sample)."""
        return self.start_run(project, "sample", model, config=config, queue=queue)

    def cancel_run(self, project: ProjectRef, run_id: int) -> Run:
        url = f"projects/{_pid(project)}/runs/{run_id}/cancel/"
        return Run.from_json(self._call("POST", url))

    def resume_run(self, project: ProjectRef, run_id: int) -> Run:
        """Resume a failed run from its last checkpoint (admin)."""
        url = f"projects/{_pid(project)}/runs/{run_id}/resume/"
        answer = self._call("POST", url)
        return Run.from_detail(answer) if "run" in answer else Run.from_json(answer)

    def wait_run(self, project: ProjectRef, run_id: int, *, timeout: float = 24 * 3600) -> Run:
        """Poll (with backoff) until the run has finished; return it if it succeeded, raise
        JobFailed (with the run and its error) if it failed or was cancelled."""
        run = self._poll(lambda: self.run(project, run_id), lambda r: r.finished, timeout)
        if run.status != "succeeded":
            raise JobFailed(run)
        return run

    # --- rounds ---------------------------------------------------------------------------

    def rounds(self, project: ProjectRef) -> Iterator[Round]:
        return (Round.from_json(r) for r in self._paged(f"projects/{_pid(project)}/rounds/"))

    def round(self, project: ProjectRef, number: int) -> Round:
        """A round with each step's run and, once judged, its results."""
        return Round.from_detail(self._call("GET", f"projects/{_pid(project)}/rounds/{number}/"))

    def start_round(
        self,
        project: ProjectRef,
        policy: str,
        *,
        recipe: str = "instructgpt",
        config: Mapping[str, Any] | None = None,
        queue: str | None = None,
    ) -> Round:
        """Start the next round (admin) from the policy named: recipe instructgpt, critic_free or
        iterated_dpo; config keyed by step (reward, ppo, ..., sample, rank_sample, gate, k, ...);
        `queue` the GPU queue every step's run goes to (None: the server's default)."""
        body: dict[str, Any] = {"policy": policy, "recipe": recipe, "config": dict(config or {})}
        if queue is not None:
            body["queue"] = queue
        return Round.from_json(self._call("POST", f"projects/{_pid(project)}/rounds/", json=body))

    def cancel_round(self, project: ProjectRef, number: int) -> Round:
        url = f"projects/{_pid(project)}/rounds/{number}/cancel/"
        return Round.from_json(self._call("POST", url))

    def wait_round(self, project: ProjectRef, number: int, *, timeout: float = 24 * 3600) -> Round:
        """Poll (with backoff) until the round has finished; return it (with its steps) if it
        succeeded, raise JobFailed with the round and its error if not."""
        found = self._poll(lambda: self.round(project, number), lambda r: r.finished, timeout)
        if found.status != "succeeded":
            raise JobFailed(found)
        return found

    def _poll(self, read: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        wait = 0.5
        while True:
            value = read()
            if done(value):
                return value
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"not finished within {timeout} s: {value!r}")
            self._sleep(wait)
            wait = min(wait * 1.5, 10.0)

    # --- evaluation -----------------------------------------------------------------------

    def create_evaluation_tasks(
        self, project: ProjectRef, model_a: str, model_b: str, *, split: str = "test"
    ) -> EvaluationTasks:
        """Blind A/B tasks between two model versions on the split's prompts (admin): how many
        were created, and how many prompts were skipped because both gave the same text."""
        body = {"model_a": model_a, "model_b": model_b, "split": split}
        url = f"projects/{_pid(project)}/evaluation-tasks/"
        return EvaluationTasks.from_json(self._call("POST", url, json=body))

    def comparisons(self, project: ProjectRef, *, model: str | None = None) -> Iterator[Comparison]:
        """Blind A/B judgements with both outputs and their models (reviewers); only those
        `model` took part in, if given."""
        url = f"projects/{_pid(project)}/comparisons/"
        params = {"model": model} if model is not None else None
        return (Comparison.from_json(c) for c in self._paged(url, params))

    def tasks(self, project: ProjectRef, *, kind: str | None = None) -> Iterator[Task]:
        """The project's tasks, newest first, with their outputs and models (reviewers)."""
        params = {"kind": kind} if kind is not None else None
        return (Task.from_json(t) for t in self._paged(f"projects/{_pid(project)}/tasks/", params))

    def refresh_evaluation(self, project: ProjectRef) -> EvaluationFreshness:
        """Ask a worker to count the evaluation figures again; poll `evaluation()` after."""
        url = f"projects/{_pid(project)}/evaluation/refresh/"
        return EvaluationFreshness.from_json(self._call("POST", url))

    def evaluation(self, project: ProjectRef, *, baseline: str | None = None) -> Evaluation:
        """Win rates against `baseline` (default: the oldest compared model) with their 95%
        intervals, Bradley–Terry ratings, flag rates, Likert, reward models, agreement, rounds."""
        params = {"baseline": baseline} if baseline is not None else None
        url = f"projects/{_pid(project)}/evaluation/"
        return Evaluation.from_json(self._call("GET", url, params=params))

    def progress(self, project: ProjectRef) -> Progress:
        return Progress.from_json(self._call("GET", f"projects/{_pid(project)}/progress/"))

    def labelers(self, project: ProjectRef) -> list[Labeler]:
        rows = self._call("GET", f"projects/{_pid(project)}/labelers/")
        return [Labeler.from_json(r) for r in rows]

    def agreement(self, project: ProjectRef) -> Agreement:
        return Agreement.from_json(self._call("GET", f"projects/{_pid(project)}/agreement/"))

    # --- exports --------------------------------------------------------------------------

    def export(
        self,
        project: ProjectRef,
        kind: str,
        *,
        split: str | None = None,
        after: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream an export (kind sft, preferences or rankings) record by record, in constant
        memory. Resume a cut download with after= the last id received (README: Exports)."""
        url = f"projects/{_pid(project)}/export/{kind}/"
        params = _export_params(split, after)
        response = self._send(
            "GET", url, params=params, headers={"Accept": "application/x-ndjson"}, stream=True
        )
        try:
            for line in response.iter_lines():
                if line:
                    yield jsonlib.loads(line)
        finally:
            response.close()

    def export_parquet(
        self,
        project: ProjectRef,
        kind: str,
        *,
        split: str | None = None,
        after: int | None = None,
    ) -> bytes:
        """The same records as a Parquet file's bytes."""
        url = f"projects/{_pid(project)}/export/{kind}/"
        headers = {"Accept": "application/vnd.apache.parquet"}
        return self._send("GET", url, params=_export_params(split, after), headers=headers).content


def _export_params(split: str | None, after: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if split is not None:
        params["split"] = split
    if after is not None:
        params["after"] = after
    return params


def _error(response: httpx.Response) -> ApiError:
    """An ApiError from an error answer: `detail` and `errors` from the JSON body (DRF's field
    errors, a dict, become `errors` with a detail naming the fields)."""
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:500] or response.reason_phrase
        return ApiError(response.status_code, text, retry_after=retry_after)
    if isinstance(body, dict) and "detail" in body:
        return ApiError(
            response.status_code, str(body["detail"]), body.get("errors"), retry_after=retry_after
        )
    if isinstance(body, dict):
        detail = "; ".join(f"{field}: {_text(problem)}" for field, problem in body.items())
    else:
        detail = _text(body)
    return ApiError(response.status_code, detail, body, retry_after=retry_after)


def _text(problem: Any) -> str:
    if isinstance(problem, list):
        return " ".join(_text(p) for p in problem)
    if isinstance(problem, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in problem.items())
    return str(problem)
