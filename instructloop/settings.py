"""InstructLoop settings, read from the environment.

Embedded default (nothing set): SQLite under var/ and a filesystem Celery broker, DEBUG on.
Production (INSTRUCTLOOP_MODE=production): refuses to start with DEBUG on, without a real
SECRET_KEY or without ALLOWED_HOSTS; `manage.py check --deploy` is clean.
Every value is parsed strictly: a malformed one stops start-up with its name in the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
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
for _dir in (VAR_DIR, MODEL_ROOT, RUN_ROOT):
    _dir.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
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
    "django_htmx.middleware.HtmxMiddleware",
]

# What /api/v1/ keeps of MIDDLEWARE when served by instructloop.wsgi (see its docstring): security
# headers, sessions and the user for session-authenticated calls, host checks and APPEND_SLASH.
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
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "labeling.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "InstructLoop API",
    "DESCRIPTION": "Labeling queue, imports and training-ready exports for the InstructGPT loop.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # A labeler's handle for an output (labeling/blinding.py), one name wherever it appears.
    "ENUM_NAME_OVERRIDES": {"SlotEnum": "labeling.blinding.SLOTS"},
    # `<id:...>` (labeling/converters.py): a row id, at most PostgreSQL's bigint.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1}
    },
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
    # A job may run for hours: the message must not be redelivered while it runs. The run
    # row's own lease (training.models) is what stops a redelivered message running twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "training.tasks.run_training": {"queue": "gpu"},
    "training.tasks.requeue_stale_runs": {"queue": "cpu"},
    "labeling.tasks.*": {"queue": "cpu"},
}
# The run row's lease: a worker extends it while a job runs; when it lapses (worker killed) the
# beat job below puts the run back on the queue and it resumes from its last checkpoint.
TRAINING_LEASE_SECONDS = env_int("INSTRUCTLOOP_TRAINING_LEASE_SECONDS", 90, minimum=2)
# How a worker runs a stage (training/launcher.py): in its own process, or as a supervised child
# process `python -m training.engine KIND --run-dir DIR` (a crash or OOM-kill of the engine then
# fails the run and leaves the worker standing).
TRAINING_LAUNCHER = os.environ.get("INSTRUCTLOOP_LAUNCHER", "inprocess").strip().lower()
if TRAINING_LAUNCHER not in {"inprocess", "subprocess"}:
    raise ImproperlyConfigured(
        f"INSTRUCTLOOP_LAUNCHER={TRAINING_LAUNCHER!r} must be 'inprocess' or 'subprocess'"
    )
CELERY_BEAT_SCHEDULE = {
    "expire-stale-leases": {
        "task": "labeling.tasks.expire_stale_leases",
        "schedule": 600.0,
    },
    "requeue-stale-runs": {
        "task": "training.tasks.requeue_stale_runs",
        "schedule": float(env_int("INSTRUCTLOOP_REQUEUE_EVERY_SECONDS", 30, minimum=1)),
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
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
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
