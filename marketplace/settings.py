"""Hub settings, all from the environment.

Defaults give an embedded hub: SQLite and a Celery broker on the local filesystem (no server).
`DATABASE_URL` (PostgreSQL) and `CELERY_BROKER_URL` (Redis) select a production setup;
`VAULTBENCH_ENV=production` turns on the deploy-time safety settings and demands a real secret.
"""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from evaluator.artifacts import MAX_ENTRIES as SITE_MAX_ARCHIVE_ENTRIES
from marketplace.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAULTBENCH_VAR_DIR", str(BASE_DIR / "var")))

PRODUCTION = env_str("VAULTBENCH_ENV", "development") == "production"
DEBUG = env_bool("DJANGO_DEBUG", not PRODUCTION)

_DEV_SECRET = "dev-only-insecure-secret-key-change-me-0123456789-abcdefghijklmnop"  # noqa: S105 (development only; production refuses it)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "" if PRODUCTION else _DEV_SECRET)
if PRODUCTION and (not SECRET_KEY or SECRET_KEY == _DEV_SECRET):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a real secret in production")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_htmx",
    "marketplace.core",
    "marketplace.audit",
    "marketplace.accounts",
    "marketplace.sites",
    "marketplace.catalog",
    "marketplace.submissions",
    "marketplace.jobs",
    "marketplace.leaderboard",
    "marketplace.egress",
    "marketplace.budgets",
    "marketplace.finetuning",
    "marketplace.portal",
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

ROOT_URLCONF = "marketplace.urls"
WSGI_APPLICATION = "marketplace.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'hub.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file in the embedded setup. IMMEDIATE takes
    # the write lock at BEGIN, so concurrent writers wait out `timeout` instead of failing at once
    # with "database is locked" when a read lock cannot be upgraded (e.g. two agents claiming).
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=30, transaction_mode="IMMEDIATE")
else:
    # PostgreSQL: persistent connections (a new connection per request made it slower than SQLite
    # under load), each checked before reuse so one the server or a restart closed is replaced
    # instead of failing the request. SQLite keeps one connection per request (a file, no cost).
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# Vendor artifacts live here; they are never served as static or media files, only through
# the permission-checked API.
MEDIA_ROOT = VAR_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads: Django streams large files to disk; the artifact cap is checked before anything is kept.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
VAULTBENCH_MAX_ARTIFACT_BYTES = env_int("VAULTBENCH_MAX_ARTIFACT_BYTES", 512 * 1024 * 1024, minimum=1)
# The hub refuses at upload what a site's unpacker would refuse (evaluator/artifacts.py); it may be
# stricter than the sites, never looser.
VAULTBENCH_MAX_ARCHIVE_ENTRIES = env_int(
    "VAULTBENCH_MAX_ARCHIVE_ENTRIES", SITE_MAX_ARCHIVE_ENTRIES, minimum=1
)
VAULTBENCH_MAX_SAMPLE_BYTES = env_int("VAULTBENCH_MAX_SAMPLE_BYTES", 20 * 1024 * 1024, minimum=1)
VAULTBENCH_LEASE_SECONDS = env_int("VAULTBENCH_LEASE_SECONDS", 60, minimum=5)
VAULTBENCH_MAX_JOB_ATTEMPTS = env_int("VAULTBENCH_MAX_JOB_ATTEMPTS", 3, minimum=1)
VAULTBENCH_SITE_ONLINE_SECONDS = env_int("VAULTBENCH_SITE_ONLINE_SECONDS", 120, minimum=1)
# Federated fine-tuning: the largest model (in parameters) a run may fine-tune; a masked vector is
# 4 bytes per parameter and is held by the hub until its round is aggregated.
VAULTBENCH_FL_MAX_PARAMETERS = env_int("VAULTBENCH_FL_MAX_PARAMETERS", 20_000_000, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "marketplace.accounts.authentication.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "marketplace.core.pagination.StandardPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # JSON only, with bounded depth and integers; views that take files declare a multipart parser.
    "DEFAULT_PARSER_CLASSES": ["marketplace.core.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "marketplace.core.errors.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Vaultbench hub API",
    "DESCRIPTION": "Private benchmark tasks, vendor submissions, site agents and leaderboards.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "marketplace.jobs.models.JobStatus",
        "SubmissionStatusEnum": "marketplace.submissions.models.SubmissionStatus",
        "TaskStatusEnum": "marketplace.catalog.models.TaskStatus",
        "FailureReasonEnum": "marketplace.jobs.models.FailureReason",
        "OrganizationKindEnum": "marketplace.accounts.models.OrganizationKind",
        "JobKindEnum": "marketplace.jobs.models.JobKind",
        "AccessEventKindEnum": "marketplace.catalog.models.AccessEventKind",
        "RunStatusEnum": "marketplace.finetuning.models.RunStatus",
        "RunPhaseEnum": "marketplace.finetuning.models.Phase",
        "RobustRuleEnum": "marketplace.finetuning.models.RobustRule",
    },
}

# Celery: an embedded filesystem broker by default (no server), Redis when CELERY_BROKER_URL says.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    # The filesystem transport needs its folders to exist before the first message.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Kombu's default is ./control in the working directory: keep it with the broker's files.
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "requeue-expired-leases": {
        "task": "marketplace.jobs.tasks.jobs_requeue_expired_task",
        "schedule": timedelta(seconds=env_int("VAULTBENCH_REQUEUE_EVERY_SECONDS", 15, minimum=1)),
    },
    # Submissions a lost message left behind (broker down, worker killed): checked, scored or
    # revealed again (marketplace/submissions/reconcile.py).
    "reconcile-submissions": {
        "task": "marketplace.submissions.tasks.submissions_reconcile_task",
        "schedule": timedelta(minutes=1),
    },
}
# Federated rounds advance when every expected site has posted, or here once a phase times out.
CELERY_BEAT_SCHEDULE["advance-finetuning-runs"] = {
    "task": "marketplace.finetuning.tasks.finetuning_runs_advance_task",
    "schedule": timedelta(seconds=env_int("VAULTBENCH_FL_ADVANCE_EVERY_SECONDS", 10, minimum=1)),
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
