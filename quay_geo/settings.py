"""Settings for quay-geo, read from the environment in this one module.

Every value a deployment may change comes from an environment variable (django-environ,
https://django-environ.readthedocs.io/). Defaults give an embedded setup that needs no external
service: SQLite and a filesystem Celery broker under ``./var/``.
Misconfiguration is reported by the system checks in ``quay_geo/checks.py``.
"""

import os
import warnings
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# --- Local state ---------------------------------------------------------------------------------
VAR_DIR = BASE_DIR / env.str("QUAY_GEO_VAR_DIR", default="var")  # absolute values stay absolute
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core (https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings) ------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# An empty key is caught by check quay_geo.E001 unless DEBUG is on, where a fixed
# development-only key is acceptable.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "insecure-development-only-key-do-not-use-in-production"  # noqa: S105
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "quay_geo",
    "storage_engines",
    "replication",
    "registry",
    "superuser",
]

MIDDLEWARE = [
    "quay_geo.logging.RequestIdMiddleware",  # first: every later log line carries the request id
    "quay_geo.proxies.ForwardedHeadersMiddleware",  # before anything reads X-Forwarded-Proto
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "replication.heartbeat.HeartbeatMiddleware",
    "quay_geo.replica.ReplicaMiddleware",  # last: it may answer a view again from the primary
]

ROOT_URLCONF = "quay_geo.urls"
WSGI_APPLICATION = "quay_geo.wsgi.application"
ASGI_APPLICATION = "quay_geo.asgi.application"

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
    },
]


# --- Database (https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url) --
def _database_url(variable: str, value: str) -> dict[str, Any]:
    """Return Django's settings of one database URL; refuse an empty or unknown one by name."""
    if not value.strip():
        raise ImproperlyConfigured(
            f"{variable} is set but empty; give a URL such as postgres://user:pass@host:5432/name"
        )
    scheme = value.split("://", 1)[0] if "://" in value else ""
    try:
        with warnings.catch_warnings():  # django-environ's warning would print the password
            warnings.simplefilter("ignore")
            config = dict(environ.Env.db_url_config(value))
    except (KeyError, ValueError):
        config = {}
    if config.get("ENGINE") not in environ.Env.DB_SCHEMES.values():
        raise ImproperlyConfigured(  # never the URL itself: it holds a password
            f"{variable} is not a database URL (scheme {scheme!r}); "
            "use postgres://user:pass@host:5432/name"
        )
    return config


DATABASES = {
    "default": _database_url(
        "DATABASE_URL",
        env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'quay-geo.sqlite3'}"),
    ),
}
# Persistent connections: opening one per request cost a third of a metadata request's time,
# and a connection to a far primary costs several round trips (TCP, TLS or its refusal, start-up).
# They live 10 minutes; one idle for 10 s is checked before use (quay_geo/postgresql/base.py).
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=600))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "quay_geo.postgresql"
    # libpq tries GSSAPI encryption first where it can, a round trip wasted on every new
    # connection unless the server uses Kerberos; give gssencmode in the URL to choose otherwise.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("gssencmode", "disable")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that server processes started by end-to-end tests share it.
    # One file per test run, so that concurrent runs never share one.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

# A PostgreSQL streaming replica in this instance's region (quay_geo/replica.py, and
# docs/operations.md "A far region and its read replica"). Empty: every query goes to
# DATABASE_URL. The registry API's reads go to the replica while it has replayed the primary up
# to DATABASE_REPLICA_MAX_LAG_SECONDS ago (checked every DATABASE_REPLICA_CHECK_SECONDS), and
# the caller has written nothing the replica has not replayed yet.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)
DATABASE_REPLICA_CHECK_SECONDS = env.float("DATABASE_REPLICA_CHECK_SECONDS", default=1.0)
if DATABASE_REPLICA_URL.strip():
    DATABASES["replica"] = _database_url("DATABASE_REPLICA_URL", DATABASE_REPLICA_URL)
    if "postgresql" not in str(DATABASES["replica"]["ENGINE"]):
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must name a PostgreSQL streaming replica")
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    # A replica that does not answer is skipped: a short connect timeout keeps that quick.
    DATABASES["replica"].setdefault("OPTIONS", {})["connect_timeout"] = env.int(
        "DATABASE_REPLICA_CONNECT_TIMEOUT", default=2
    )
    # Tests create no database on the replica (a standby is read-only): the alias reads the
    # default test database, and the router sends its reads to "default" (the same database).
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["quay_geo.replica.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (https://docs.djangoproject.com/en/5.2/topics/cache/#redis) --------------------------
# A Redis in this instance's region, shared by its processes: the region cache's second level
# (replication/regioncache.py), read-your-writes marks (quay_geo/replica.py) and the counts of
# failed logins and requests per minute (registry/counters.py) live there. Unset: each
# process has its own memory cache, and a client whose next request lands in another process
# may read the replica before it has replayed the client's write.
QUAY_GEO_REGION_CACHE_URL = env.str("QUAY_GEO_REGION_CACHE_URL", default="")
if QUAY_GEO_REGION_CACHE_URL.strip():
    if not QUAY_GEO_REGION_CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            "QUAY_GEO_REGION_CACHE_URL must be a Redis URL (redis://host:6379/0)"
        )
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": QUAY_GEO_REGION_CACHE_URL,
            "KEY_PREFIX": "quay-geo",
        }
    }

# --- Security (https://docs.djangoproject.com/en/5.2/topics/security/) -------------------------
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
LOGIN_URL = "/superuser/login/"
LOGIN_REDIRECT_URL = "/superuser/"

# --- Static files (https://docs.djangoproject.com/en/5.2/howto/static-files/) ------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html) -----------------
# The default broker is kombu's filesystem transport: it needs no server and works for every
# process on one machine. Use Redis or RabbitMQ (CELERY_BROKER_URL) for several machines.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_IMPORTS = ("replication.heartbeat",)
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "replication.heartbeat",
        "schedule": max(env.float("QUAY_GEO_HEARTBEAT_SECONDS", default=30.0), 5.0),
    },
    "reconcile": {
        "task": "replication.reconcile",
        "schedule": env.float("QUAY_GEO_RECONCILE_SECONDS", default=60.0),
    },
    "collect-garbage": {
        "task": "replication.collect_garbage",
        "schedule": env.float("QUAY_GEO_GC_INTERVAL_SECONDS", default=900.0),
    },
}

# --- Django REST framework (https://www.django-rest-framework.org/api-guide/settings/) ----------
REST_FRAMEWORK: dict[str, object] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "quay-geo superuser API", "VERSION": "1"}

# --- Registry tokens (Docker token authentication) -----------------------------------------------
QUAY_GEO_TOKEN_TTL = env.int("QUAY_GEO_TOKEN_TTL", default=300)
QUAY_GEO_TOKEN_ISSUER = env.str("QUAY_GEO_TOKEN_ISSUER", default="quay-geo")
# Service name and token audience; empty: the host the client used. Set it when instances are
# reached under different host names but must accept each other's tokens.
QUAY_GEO_REGISTRY_SERVICE = env.str("QUAY_GEO_REGISTRY_SERVICE", default="")
# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto header.
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Registry API --------------------------------------------------------------------------------
# Requests per minute and client (user or address); 0 turns the limiter off. Every process
# counts the same requests: in the Redis cache (QUAY_GEO_REGION_CACHE_URL) when set, otherwise
# in the database, one write to the primary per registry request (registry/counters.py).
QUAY_GEO_RATE_LIMIT_PER_MINUTE = env.int("QUAY_GEO_RATE_LIMIT_PER_MINUTE", default=0)
# OCI-Chunk-Min-Length advertised on upload sessions; unset: the engine's minimum part size,
# 0: none.
QUAY_GEO_CHUNK_MIN_LENGTH = env.int("QUAY_GEO_CHUNK_MIN_LENGTH", default=None)
QUAY_GEO_MANIFEST_MAX_BYTES = env.int("QUAY_GEO_MANIFEST_MAX_BYTES", default=4 * 1024 * 1024)
# Lifetime of the storage URLs blob GETs redirect to.
QUAY_GEO_DIRECT_URL_TTL = env.int("QUAY_GEO_DIRECT_URL_TTL", default=600)
# How long a request's claim on an upload session lasts; a body streaming longer renews it every
# third of it. A request whose worker died blocks the client's retry at most this long.
QUAY_GEO_UPLOAD_LEASE_SECONDS = env.int("QUAY_GEO_UPLOAD_LEASE_SECONDS", default=30)

# --- Region-local caches (replication/regioncache.py, docs/operations.md "Caches") ---------------
# Lifetime of cached content facts (a manifest by digest, a blob's size and locations, a user,
# a role) and of cached tag targets, in seconds; 0 turns that kind off. They bound how soon a
# delete or a moved tag in one region is seen in another.
QUAY_GEO_CACHE_SECONDS = env.float("QUAY_GEO_CACHE_SECONDS", default=30.0)
QUAY_GEO_TAG_CACHE_SECONDS = env.float("QUAY_GEO_TAG_CACHE_SECONDS", default=5.0)
# How often a process asks the database whether the storage configuration changed, in seconds.
QUAY_GEO_CONFIG_CHECK_SECONDS = env.float("QUAY_GEO_CONFIG_CHECK_SECONDS", default=5.0)

# --- Storage replication (../docs/architecture.md) ---------------------------------------------
# Location IDs this process prefers, in order (spaces or commas). Empty: the stored order.
QUAY_DISTRIBUTED_STORAGE_PREFERENCE = env.str("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", default="")
# Secrets of engines are encrypted with this key (default: derived from DJANGO_SECRET_KEY).
QUAY_GEO_ENCRYPTION_KEY = env.str("QUAY_GEO_ENCRYPTION_KEY", default="")
# How a copy is verified: "stream" (default) checks the digest computed while streaming and the
# target's size; "readback" also re-reads and hashes the whole target (twice the bytes moved).
QUAY_GEO_REPLICATION_VERIFY = env.str("QUAY_GEO_REPLICATION_VERIFY", default="stream")
QUAY_GEO_REPLICATION_LEASE_SECONDS = env.int("QUAY_GEO_REPLICATION_LEASE_SECONDS", default=300)
QUAY_GEO_REPLICATION_MAX_ATTEMPTS = env.int("QUAY_GEO_REPLICATION_MAX_ATTEMPTS", default=8)
# Attempts in all (task retries and the reconciler's) after which a transient failure is given
# up: the placement stays failed until an operator retries it or its store probes healthy again.
QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS = env.int("QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS", default=24)
QUAY_GEO_REPLICATION_BACKOFF_BASE = env.float("QUAY_GEO_REPLICATION_BACKOFF_BASE", default=5.0)
QUAY_GEO_REPLICATION_BACKOFF_MAX = env.float("QUAY_GEO_REPLICATION_BACKOFF_MAX", default=3600.0)
QUAY_GEO_RECONCILE_LOST_AFTER = env.int("QUAY_GEO_RECONCILE_LOST_AFTER", default=300)
QUAY_GEO_GC_GRACE_SECONDS = env.int("QUAY_GEO_GC_GRACE_SECONDS", default=24 * 3600)
QUAY_GEO_UPLOAD_EXPIRY_SECONDS = env.int("QUAY_GEO_UPLOAD_EXPIRY_SECONDS", default=24 * 3600)
# Deadlines of storage calls (docs/operations.md "A hung store"), in seconds. A metadata call (a
# stat, a HEAD, the first byte of a read, a delete) connects within CONNECT_TIMEOUT and answers
# within METADATA_TIMEOUT, without a retry; a streamed body (an upload part, a copy, the rest of
# a read) may wait READ_TIMEOUT between bytes, in ATTEMPTS tries. A pull gives one location
# ATTEMPT_SECONDS to answer before it tries the next.
QUAY_GEO_STORAGE_CONNECT_TIMEOUT = env.float("QUAY_GEO_STORAGE_CONNECT_TIMEOUT", default=2.0)
QUAY_GEO_STORAGE_METADATA_TIMEOUT = env.float("QUAY_GEO_STORAGE_METADATA_TIMEOUT", default=3.0)
QUAY_GEO_STORAGE_READ_TIMEOUT = env.float("QUAY_GEO_STORAGE_READ_TIMEOUT", default=20.0)
QUAY_GEO_STORAGE_ATTEMPTS = env.int("QUAY_GEO_STORAGE_ATTEMPTS", default=2)
QUAY_GEO_STORAGE_ATTEMPT_SECONDS = env.float("QUAY_GEO_STORAGE_ATTEMPT_SECONDS", default=4.0)
QUAY_GEO_BREAKER_FAILURES = env.int("QUAY_GEO_BREAKER_FAILURES", default=3)
QUAY_GEO_BREAKER_SECONDS = env.float("QUAY_GEO_BREAKER_SECONDS", default=30.0)
# The name of this process's service on the status tab (one row per host, role and name);
# empty: its storage preference. Two services of one host with one preference need names.
QUAY_GEO_SERVICE_NAME = env.str("QUAY_GEO_SERVICE_NAME", default="")
# Seconds between heartbeats (and reachability probes) of each web and worker process.
QUAY_GEO_HEARTBEAT_SECONDS = env.float("QUAY_GEO_HEARTBEAT_SECONDS", default=30.0)
# When set, /metrics requires "Authorization: Bearer <token>".
QUAY_GEO_METRICS_TOKEN = env.str("QUAY_GEO_METRICS_TOKEN", default="")

# --- Logging -------------------------------------------------------------------------------------
# "json": one JSON line per event (quay_geo/logging.py); "text": one plain line.
# Checked here, not in a system check: logging is configured before checks run.
QUAY_GEO_LOG_FORMAT = env.str("QUAY_GEO_LOG_FORMAT", default="text" if DEBUG else "json")
if QUAY_GEO_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"QUAY_GEO_LOG_FORMAT is {QUAY_GEO_LOG_FORMAT!r}; use json or text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "quay_geo.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": QUAY_GEO_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("QUAY_GEO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "swiftclient": {"level": "ERROR"},
    },
}

# --- Hardening: input limits (docs/operations.md#input-limits) ----------------------------------
# Regular expressions (searched, not anchored) a layer URL must match / must not match, as
# distribution's validation.manifests.urls.allow/deny. URLs are accepted only on
# non-distributable layers, only http(s), never with a fragment. Empty allow: any such URL.
QUAY_GEO_MANIFEST_URLS_ALLOW = env.str("QUAY_GEO_MANIFEST_URLS_ALLOW", default="")
QUAY_GEO_MANIFEST_URLS_DENY = env.str("QUAY_GEO_MANIFEST_URLS_DENY", default="")
# Most scopes one token request may ask for; more is refused (400) before any password check.
QUAY_GEO_TOKEN_MAX_SCOPES = env.int("QUAY_GEO_TOKEN_MAX_SCOPES", default=32)

# --- Audit, scrub and repair (docs/operations.md "Audit, scrub and repair") ---------------------
# Every location is audited against its own listing this often (seconds): lost and corrupt
# copies are marked and repaired, unreferenced objects reported and, once older than
# QUAY_GEO_GC_GRACE_SECONDS, deleted.
QUAY_GEO_AUDIT_SECONDS = env.float("QUAY_GEO_AUDIT_SECONDS", default=86400.0)
# Bytes of present copies re-read and hashed per location per day, least recently verified
# first, in slices every QUAY_GEO_SCRUB_SECONDS (each reads its share of the day's budget).
QUAY_GEO_SCRUB_BYTES_PER_DAY = env.int("QUAY_GEO_SCRUB_BYTES_PER_DAY", default=10 * 1024**3)
QUAY_GEO_SCRUB_SECONDS = env.float("QUAY_GEO_SCRUB_SECONDS", default=3600.0)
CELERY_BEAT_SCHEDULE["audit-locations"] = {
    "task": "replication.audit_locations",
    "schedule": QUAY_GEO_AUDIT_SECONDS,
}
CELERY_BEAT_SCHEDULE["scrub-locations"] = {
    "task": "replication.scrub_locations",
    "schedule": QUAY_GEO_SCRUB_SECONDS,
}

# --- Hardening: abuse (docs/operations.md "Password guessing, rate limits and proxies") -----------
# Failed logins (the token endpoint, the JSON API's Basic auth, the panel's sign-in) are counted
# per user name and per client address, in the shared cache when QUAY_GEO_REGION_CACHE_URL is
# set, otherwise in the database (registry/counters.py). After this many failures in a row, a
# user name (or an address) is refused for QUAY_GEO_LOGIN_BACKOFF_SECONDS, doubled with every
# further failure up to QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS; a success clears the user's count.
# Counts are forgotten QUAY_GEO_LOGIN_FORGET_SECONDS after their last failure.
QUAY_GEO_LOGIN_FAILURES_PER_USER = env.int("QUAY_GEO_LOGIN_FAILURES_PER_USER", default=5)
QUAY_GEO_LOGIN_FAILURES_PER_CLIENT = env.int("QUAY_GEO_LOGIN_FAILURES_PER_CLIENT", default=20)
QUAY_GEO_LOGIN_BACKOFF_SECONDS = env.float("QUAY_GEO_LOGIN_BACKOFF_SECONDS", default=1.0)
QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS = env.float("QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS", default=900.0)
QUAY_GEO_LOGIN_FORGET_SECONDS = env.float("QUAY_GEO_LOGIN_FORGET_SECONDS", default=3600.0)
# Password hashes (PBKDF2, most of a second each) computed at once per process; a login beyond
# them is answered 429 at once instead of queueing behind them and starving the other requests.
QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS = env.int("QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS", default=4)
# Addresses and CIDR networks of the reverse proxies in front (comma separated): only their
# X-Forwarded-For/-Proto headers are read. gunicorn reads the same variable as
# forwarded_allow_ips (quay_geo/gunicorn_config.py). Empty: no proxy is trusted.
QUAY_GEO_TRUSTED_PROXIES = env.list("QUAY_GEO_TRUSTED_PROXIES", default=[])
# /health/endtoend probes every location (write, read, delete) at most once per this many
# seconds, its answer kept in the default cache (shared when QUAY_GEO_REGION_CACHE_URL is set).
QUAY_GEO_HEALTH_CACHE_SECONDS = env.float("QUAY_GEO_HEALTH_CACHE_SECONDS", default=30.0)
