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
    "drf_spectacular_sidecar",  # Swagger UI served from here, not a CDN
    "django_htmx",
    "axes",
    "csp",
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
    "marketplace.notifications",
    "marketplace.portal",
]

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer before host checks and HTTPS redirects
    # (probes come by IP over plain HTTP); every other request is counted, timed and logged with ids.
    "marketplace.ops.middleware.OpsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out log-in into its 429 page
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
    # WAL: a commit is one fsync instead of three (~2.6 vs ~14 ms here; synchronous stays FULL, so
    # no durability is given up) and readers never wait for the writer. Every federated post is a
    # commit on the round's critical path. WAL needs the processes on one host (no network FS).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL;"
    )
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
# Log-in throttling (django-axes): a username tried from one address is locked for a while after a
# few failures, on the portal's form and the API's token endpoint alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("VAULTBENCH_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("VAULTBENCH_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "marketplace.accounts.lockout.lockout_response"
AXES_IPWARE_PROXY_COUNT = env_int("VAULTBENCH_PROXY_COUNT", 0, minimum=0)
AXES_VERBOSE = False

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
    # With DEBUG off (production, the demo) hashed, pre-compressed (gzip; brotli when installed)
    # files, cached for ever, after collectstatic; with DEBUG on (development, the tests) the
    # source folders as they are, no collectstatic needed.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# E-mail (password resets, invitations, notifications): the console in development, files under
# var/mail in the demo, SMTP from the environment in production.
_EMAIL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
}
_email = env_str("VAULTBENCH_EMAIL_BACKEND", "smtp" if PRODUCTION else "console")
if _email not in _EMAIL_BACKENDS:
    raise ImproperlyConfigured(f"VAULTBENCH_EMAIL_BACKEND must be one of {', '.join(_EMAIL_BACKENDS)}, not {_email!r}")
EMAIL_BACKEND = _EMAIL_BACKENDS[_email]
EMAIL_FILE_PATH = env_str("VAULTBENCH_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Vaultbench <noreply@localhost>")
# Links in e-mails and webhooks point here.
VAULTBENCH_PUBLIC_URL = env_str("VAULTBENCH_PUBLIC_URL", "http://127.0.0.1:8000")
VAULTBENCH_INVITATION_DAYS = env_int("VAULTBENCH_INVITATION_DAYS", 14, minimum=1)

# Webhooks: deliveries to private, loopback or reserved addresses are refused unless allowed
# (a hub must not be turned into a scanner of its own network).
VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = env_bool("VAULTBENCH_WEBHOOK_ALLOW_PRIVATE", False)
VAULTBENCH_WEBHOOK_ALLOW_HTTP = env_bool("VAULTBENCH_WEBHOOK_ALLOW_HTTP", not PRODUCTION)
VAULTBENCH_WEBHOOK_MAX_ATTEMPTS = env_int("VAULTBENCH_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
VAULTBENCH_WEBHOOK_BACKOFF_SECONDS = env_int("VAULTBENCH_WEBHOOK_BACKOFF_SECONDS", 30, minimum=0)
VAULTBENCH_WEBHOOKS_PER_ORGANIZATION = env_int("VAULTBENCH_WEBHOOKS_PER_ORGANIZATION", 10, minimum=1)

# Content-Security-Policy (django-csp): scripts and styles from this origin only; no inline
# script anywhere (the Swagger UI's initializer is a served file). Style attributes are allowed
# (chart colours, htmx's swaps); <style> elements and foreign stylesheets are not.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-elem": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
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
# Long polling of the agents' run state (docs/federated-protocol.md, "Long polling"): the longest
# hold of one state request (0: answer at once), and how many a process holds at most.
try:
    VAULTBENCH_FL_STATE_WAIT_SECONDS = float(env_str("VAULTBENCH_FL_STATE_WAIT_SECONDS", "20"))
except ValueError as _exc:
    raise ImproperlyConfigured("VAULTBENCH_FL_STATE_WAIT_SECONDS must be a number of seconds") from _exc
if not 0 <= VAULTBENCH_FL_STATE_WAIT_SECONDS <= 300:
    raise ImproperlyConfigured("VAULTBENCH_FL_STATE_WAIT_SECONDS must be between 0 and 300")
VAULTBENCH_FL_STATE_WAITERS = env_int("VAULTBENCH_FL_STATE_WAITERS", 2, minimum=0)

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
    # Scoped throttles for anonymous account endpoints (per client address; the cache is per
    # process unless CACHES says otherwise). Log-in failures are throttled by django-axes.
    "DEFAULT_THROTTLE_RATES": {"sign_up": env_str("VAULTBENCH_SIGN_UP_RATE", "20/hour")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Vaultbench hub API",
    "DESCRIPTION": "Private benchmark tasks, vendor submissions, site agents and leaderboards.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "marketplace.jobs.models.JobStatus",
        "SubmissionStatusEnum": "marketplace.submissions.models.SubmissionStatus",
        "TaskStatusEnum": "marketplace.catalog.models.TaskStatus",
        "FailureReasonEnum": "marketplace.jobs.models.FailureReason",
        "OrganizationKindEnum": "marketplace.accounts.models.OrganizationKind",
        "InvitationStatusEnum": "marketplace.accounts.models.InvitationStatus",
        "NotificationEventEnum": "marketplace.notifications.models.Event",
        "JobKindEnum": "marketplace.jobs.models.JobKind",
        "AccessEventKindEnum": "marketplace.catalog.models.AccessEventKind",
        "RunStatusEnum": "marketplace.finetuning.models.RunStatus",
        "RunPhaseEnum": "marketplace.finetuning.models.Phase",
        "RobustRuleEnum": "marketplace.finetuning.models.RobustRule",
    },
}

# Cache (the leaderboard's answers, keyed by each board's version; throttles): Redis at
# VAULTBENCH_CACHE_URL, shared by every gunicorn worker and host (production: set it, e.g. another
# database of the broker's Redis); without it each process's own memory (the embedded hub, tests).
_cache_url = env_str("VAULTBENCH_CACHE_URL", "")
if _cache_url and not _cache_url.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"VAULTBENCH_CACHE_URL must be a redis://, rediss:// or unix:// URL, got {_cache_url!r}")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url,
                "KEY_PREFIX": "vaultbench", "TIMEOUT": 300}
    if _cache_url
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "vaultbench",
          "TIMEOUT": 300, "OPTIONS": {"MAX_ENTRIES": 2000}}
}  # fmt: skip

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
# Notifications: results at their release time, approvals waiting, stuck sites, closing tasks;
# webhook deliveries a lost message left behind (marketplace/notifications/sweep.py).
CELERY_BEAT_SCHEDULE["notifications-sweep"] = {
    "task": "marketplace.notifications.tasks.notifications_sweep_task",
    "schedule": timedelta(seconds=env_int("VAULTBENCH_NOTIFY_EVERY_SECONDS", 60, minimum=1)),
}
# Tasks open at opens_at and close at closes_at (marketplace/catalog/services.py tasks_apply_schedule).
CELERY_BEAT_SCHEDULE["task-schedule"] = {
    "task": "marketplace.catalog.tasks.tasks_schedule_task",
    "schedule": timedelta(seconds=env_int("VAULTBENCH_SCHEDULE_EVERY_SECONDS", 60, minimum=1)),
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# VAULTBENCH_LOG_FORMAT=json: one JSON object per line with the request's, job's, site's, task's
# and run's ids (evaluator/jsonlog.py); text otherwise.
LOG_FORMAT = env_str("VAULTBENCH_LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"VAULTBENCH_LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "evaluator.jsonlog.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-axes logs every log-in at INFO; its warnings (failures, lock-outs) are what matter.
    "loggers": {"axes": {"level": env_str("VAULTBENCH_AXES_LOG_LEVEL", "WARNING")}},
}
# A JSON-logging Celery worker keeps this configuration instead of Celery's own text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
# /metrics: this bearer token when set, else loopback callers only (marketplace/ops/middleware.py).
VAULTBENCH_METRICS_TOKEN = env_str("VAULTBENCH_METRICS_TOKEN", "")

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
