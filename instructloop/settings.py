"""InstructLoop settings, read from the environment.

Embedded default (nothing set): SQLite under var/ and a filesystem Celery broker, DEBUG on.
Production (INSTRUCTLOOP_MODE=production): refuses to start with DEBUG on, without a real
SECRET_KEY or without ALLOWED_HOSTS; `manage.py check --deploy` is clean.
Every value is parsed strictly: a malformed one stops start-up with its name in the message.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "django-insecure-instructloop-dev-key-do-not-use-in-production"  # noqa: S105

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)"
    )


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


MODE = os.environ.get("INSTRUCTLOOP_MODE", "development").strip().lower()
if MODE not in {"development", "production"}:
    raise ImproperlyConfigured(f"INSTRUCTLOOP_MODE={MODE!r} must be 'development' or 'production'")
PRODUCTION = MODE == "production"

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = os.environ.get("SECRET_KEY", "" if PRODUCTION else DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])

if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production (INSTRUCTLOOP_MODE=production)")
    if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured("SECRET_KEY must be set to a private random value in production")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters with 5 distinct ones")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names served in production")

VAR_DIR = Path(os.environ.get("INSTRUCTLOOP_VAR_DIR", BASE_DIR / "var")).resolve()
MODEL_ROOT = (
    VAR_DIR / "models"
)  # model versions live under here, addressed by id, never by user path
RUN_ROOT = VAR_DIR / "runs"  # training run outputs and checkpoints
# Where admins put the model directories and GGUF files they register (a path in a registration
# is relative to it; nothing outside it is read). A shared or mounted folder in production.
MODEL_IMPORT_ROOT = Path(
    os.environ.get("INSTRUCTLOOP_MODEL_IMPORT_ROOT", VAR_DIR / "import")
).resolve()
# Where model versions are published (training/artifacts.py): empty keeps them in MODEL_ROOT, as
# the embedded set-up always has; a folder or `s3://bucket/prefix` (keys from the AWS_* environment,
# the server from INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL for MinIO and other S3-compatible stores)
# puts them under `<that>/models/`, where every worker node finds them.
ARTIFACTS = os.environ.get("INSTRUCTLOOP_ARTIFACTS", "").strip().rstrip("/")
if ARTIFACTS and "://" in ARTIFACTS and not ARTIFACTS.startswith(("s3://", "file://")):
    raise ImproperlyConfigured(
        f"INSTRUCTLOOP_ARTIFACTS={ARTIFACTS!r} must be a local folder or an s3://bucket/prefix URL"
    )
if ARTIFACTS and "://" not in ARTIFACTS and not Path(ARTIFACTS).is_absolute():
    raise ImproperlyConfigured(f"INSTRUCTLOOP_ARTIFACTS={ARTIFACTS!r} must be an absolute path")
ARTIFACTS_ENDPOINT_URL = os.environ.get("INSTRUCTLOOP_ARTIFACTS_ENDPOINT_URL", "").strip() or None
# A worker's copies of the model versions it fetched from a remote store, by content sha256.
ARTIFACT_CACHE = Path(
    os.environ.get("INSTRUCTLOOP_ARTIFACT_CACHE", VAR_DIR / "cache" / "artifacts")
).resolve()
for _dir in (VAR_DIR, MODEL_ROOT, RUN_ROOT, MODEL_IMPORT_ROOT):
    _dir.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Only for code that still makes tokens with DRF's model (accounts/apps.py mirrors them).
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "axes",
    "accounts",
    "labeling",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a locked-out login (page or Django admin) into its answer.
    "axes.middleware.AxesMiddleware",
]

# What /api/v1/ keeps of MIDDLEWARE when served by instructloop.wsgi (see its docstring): security
# headers, sessions and the user for session-authenticated calls, host checks and APPEND_SLASH.
# No CSP (JSON is not a page) and no AxesMiddleware: the token endpoint answers its own lockout
# (accounts/api.py), so the labeler loop's calls pay for neither.
API_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "instructloop.urls"
WSGI_APPLICATION = "instructloop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# IMMEDIATE: a SQLite transaction takes the write lock when it begins, so queue claims serialise
# instead of failing with "database is locked" on upgrade. WAL lets the web server read while the
# worker writes.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    try:
        _db = dj_database_url.parse(DATABASE_URL, conn_max_age=60)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if _db["ENGINE"] not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// (or sqlite://) URL")
    if not _db["NAME"]:
        raise ImproperlyConfigured("DATABASE_URL names no database")
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        _db["OPTIONS"] = dict(SQLITE_OPTIONS)
        _db["CONN_MAX_AGE"] = 0
    else:
        # No JIT compilation: PostgreSQL compiles any query its planner prices over 100,000,
        # which at 10^6 tasks includes the labeler's home page (a 10 ms query paid 44 ms of
        # JIT, issue 15). Every query here is short or already aggregated by the database.
        _options = _db.setdefault("OPTIONS", {})
        _options["options"] = f"{_options.get('options', '')} -c jit=off".strip()
        _db["TEST"] = {}
        test_name = os.environ.get("TEST_DATABASE_NAME")
        if test_name:
            _db["TEST"]["NAME"] = test_name
    DATABASES = {"default": _db}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "instructloop.sqlite3"),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # A file, not Django's in-memory default, so a Celery worker started by a test
            # (tests/worker.py) opens the same test database.
            "TEST": {"NAME": str(VAR_DIR / "test_instructloop.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Argon2id first: new passwords are hashed with it, and a password stored with any hasher below
# is re-hashed with Argon2 the next time its user logs in. (Tests swap in a fast hasher.)
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# django-axes first: it refuses a locked-out client before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# Request caps (BAD-INPUTS 11): Django answers 400 past these before a view runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000, minimum=10)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
IMPORT_MAX_BYTES = env_int("INSTRUCTLOOP_IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "labeling.api.authentication.SqlTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser and renderer, with a too-deep body and an unpaired surrogate answered 400
    # instead of 500 (labeling/api/formats.py).
    "DEFAULT_PARSER_CLASSES": [
        "labeling.api.formats.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["labeling.api.formats.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "labeling.api.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "labeling.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "labeling.api.errors.exception_handler",
}
# The most rows one page of a list endpoint returns, whatever `?limit=` asks for.
API_MAX_PAGE_SIZE = 1000
# /api/schema/ describes every path: open to anyone in development, to signed-in users (token or
# session) in production unless this opens it (accounts/permissions.py).
API_SCHEMA_PUBLIC = env_bool("INSTRUCTLOOP_PUBLIC_API_SCHEMA", default=not PRODUCTION)
# How long a new API token lives unless its creator asks otherwise; 0: no expiry by default.
API_TOKEN_DAYS = env_int("INSTRUCTLOOP_TOKEN_DAYS", 90)

SPECTACULAR_SETTINGS = {
    "TITLE": "InstructLoop API",
    "DESCRIPTION": "Labeling queue, imports and training-ready exports for the InstructGPT loop.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # A labeler's handle for an output (labeling/blinding.py), one name wherever it appears.
    "ENUM_NAME_OVERRIDES": {
        "SlotEnum": "labeling.blinding.SLOTS",
        # Three choice sets are fields named "kind": name each after what it kinds.
        "RunKindEnum": "training.models.RunKind",
        "ModelKindEnum": "labeling.models.ModelKind",
        "TaskKindEnum": "labeling.models.TaskKind",
    },
    # `<id:...>` (labeling/converters.py): a row id, at most PostgreSQL's bigint.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1}
    },
}

# The run row's lease: a worker extends it while a job runs; when it lapses (worker killed) the
# beat job below puts the run back on the queue and it resumes from its last checkpoint.
TRAINING_LEASE_SECONDS = env_int("INSTRUCTLOOP_TRAINING_LEASE_SECONDS", 90, minimum=2)
# A soft time limit on one attempt of a run: past it the worker stops the engine and fails the run
# with the reason (not retried: the next attempt would take as long). Enforced by the launcher's
# heartbeat, not by Celery's soft_time_limit, which the solo pool GPU workers use does not apply
# (Celery's limits need prefork's child processes). 0 turns it off.
TRAINING_TIME_LIMIT_SECONDS = env_int("INSTRUCTLOOP_RUN_TIME_LIMIT_SECONDS", 48 * 3600)
# The GPU queues a run may be sent to, one per GPU type (`-Q <name>` on the workers with those
# GPUs); a run that names none goes to the first. A run names its queue when it is started
# (runs.run_start(queue=...)); the name is kept on the run row, so a re-send goes there too.
TRAINING_GPU_QUEUES = [
    q.strip() for q in os.environ.get("INSTRUCTLOOP_GPU_QUEUES", "gpu").split(",") if q.strip()
]
if not TRAINING_GPU_QUEUES or not all(
    re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", q) for q in TRAINING_GPU_QUEUES
):
    raise ImproperlyConfigured(
        "INSTRUCTLOOP_GPU_QUEUES must list queue names (a-z, 0-9, '.', '_', '-'), comma-separated"
    )

# Failed logins (django-axes), on the login page, Django's admin login and the API's token
# endpoint alike: after LIMIT failures from one client address (any accounts) or on one account
# (any addresses), that address or account is refused, the right password included, with a 429
# and Retry-After, until COOLOFF seconds have passed since its last counted failure. Tries while
# locked out are not counted, so the wait announced is the wait. Failures are rows in the database
# (axes' database handler): shared by every web worker, on PostgreSQL and SQLite alike, no cache.
AXES_FAILURE_LIMIT = env_int("INSTRUCTLOOP_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("INSTRUCTLOOP_LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success does not wipe the failures: with lockout by address, one good login of the attacker's
# own account would otherwise clear every failure made from their address.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
# How many proxies in front of the app append to X-Forwarded-For: the client address is the one
# the outermost of them saw. 0: REMOTE_ADDR. Production sits behind one TLS proxy (deployment.md).
TRUSTED_PROXIES = env_int("INSTRUCTLOOP_TRUSTED_PROXIES", 1 if PRODUCTION else 0)

# Pages may run scripts and styles from our own origin only (static/, htmx vendored there): no
# inline script, no event-handler attribute, no eval, no inline style, nothing from elsewhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}

# Celery: Redis in production and tests; a filesystem broker for the embedded default.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "").strip() or "filesystem://"
_broker_scheme, _, _ = CELERY_BROKER_URL.partition("://")
if _broker_scheme not in {"redis", "rediss", "filesystem"}:
    # The value itself is not echoed: it may hold a password.
    raise ImproperlyConfigured("CELERY_BROKER_URL must be a redis:// or rediss:// URL")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # kombu's default is ./control in the working directory: keep it under var/ with the rest.
        "control_folder": str(_broker_dir / "control"),
    }
else:
    # Messages are acknowledged when their job ends (acks_late, so a busy worker holds no second
    # message another worker could run). A message a worker took and never acknowledged (it was
    # killed) comes back after the visibility timeout: chosen to match the run lease (4 leases,
    # 6 minutes by default), not hours. A job that runs longer has its message delivered again
    # meanwhile; the run row's lease (training/loop.py) makes that copy a no-op ("skipped"). Beat
    # re-sends a run whose lease lapsed within a lease and 30 s anyway, so this only bounds how
    # long a dead worker's message lingers.
    _visibility = env_int(
        "INSTRUCTLOOP_BROKER_VISIBILITY_SECONDS", 4 * TRAINING_LEASE_SECONDS, minimum=2
    )
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _visibility,
        # kombu looks for such messages every interval x throttle seconds, 10 x 10 by default: a
        # dead worker's message then came back up to 100 s after its timeout. One look every
        # quarter of the timeout (at most every 10 s, a single Redis range read) brings it back
        # within a quarter timeout of it.
        "unacked_restore_interval": max(1, min(10, _visibility // 4)),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    # A run that names a queue is sent there (dispatch.run_send); others to the first GPU queue.
    "training.tasks.run_training": {"queue": TRAINING_GPU_QUEUES[0]},
    "training.tasks.register_model": {"queue": TRAINING_GPU_QUEUES[0]},
    "training.tasks.requeue_stale_runs": {"queue": "cpu"},
    "training.tasks.resend_registrations": {"queue": "cpu"},
    "training.tasks.refresh_review_snapshot": {"queue": "cpu"},
    "labeling.tasks.*": {"queue": "cpu"},
}
# How a worker runs a stage (training/launcher.py): in its own process, or as a supervised child
# process `python -m training.engine KIND --run-dir DIR` (a crash or OOM-kill of the engine then
# fails the run and leaves the worker standing).
TRAINING_LAUNCHER = os.environ.get("INSTRUCTLOOP_LAUNCHER", "inprocess").strip().lower()
if TRAINING_LAUNCHER not in {"inprocess", "subprocess"}:
    raise ImproperlyConfigured(
        f"INSTRUCTLOOP_LAUNCHER={TRAINING_LAUNCHER!r} must be 'inprocess' or 'subprocess'"
    )
# Processes a stage trains in when its run does not say (FSDP2; one per GPU): a worker on a node
# with N GPUs sets N. Needs the subprocess launcher.
TRAINING_PROCESSES = int(os.environ.get("INSTRUCTLOOP_TRAINING_PROCESSES", "1"))
if TRAINING_PROCESSES < 1:
    raise ImproperlyConfigured("INSTRUCTLOOP_TRAINING_PROCESSES must be at least 1")
CELERY_BEAT_SCHEDULE = {
    "expire-stale-leases": {
        "task": "labeling.tasks.expire_stale_leases",
        "schedule": 600.0,
    },
    "requeue-stale-runs": {
        "task": "training.tasks.requeue_stale_runs",
        "schedule": float(env_int("INSTRUCTLOOP_REQUEUE_EVERY_SECONDS", 30, minimum=1)),
    },
    "resend-registrations": {
        "task": "training.tasks.resend_registrations",
        "schedule": float(env_int("INSTRUCTLOOP_REQUEUE_EVERY_SECONDS", 30, minimum=1)),
    },
    # The reviewer dashboards' figures, recounted where judgements came in (training/review.py).
    "refresh-review-snapshots": {
        "task": "training.tasks.refresh_stale_review_snapshots",
        "schedule": float(env_int("INSTRUCTLOOP_REVIEW_REFRESH_SECONDS", 900, minimum=10)),
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL={LOG_LEVEL!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"forbidden": {"()": "instructloop.logs.ForbiddenWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Django's own default config gives "django" a console handler of its own (when DEBUG)
        # as well as propagating to the root's: every record printed twice. Root's alone.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.request": {"filters": ["forbidden"]},
    },
}

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# The Celery app, created with the settings so that every Django process (web, worker, manage.py,
# tests) has it before a task is sent (shared_task binds to it). It lives here rather than in
# instructloop/__init__.py so that the API client (instructloop/client.py) imports no Django.
from .celery import app as celery_app  # noqa: E402, F401
