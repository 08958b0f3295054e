"""Settings for MLX Portal, read from the environment (and `.env` when present).

Every variable is listed in `.env.example` and in the README's configuration table.
Production overrides are grouped at the bottom under "Production".
"""

import ipaddress
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from config import secret_key as key_file

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where the portal keeps its own state: SQLite database, logs, beat schedule, secret key.
# These settings only read: `make run` creates the folder (`python -m config.secret_key`), and
# what writes below it makes its own sub-folders (servers' logs, collectstatic).
DATA_DIR = Path(env.str("MLX_PORTAL_DATA_DIR", default=str(key_file.DEFAULT_DATA_DIR))).resolve()
LOG_DIR = DATA_DIR / "logs"

# The key from the environment, else the one `make run` keeps in DATA_DIR; without either the
# portal refuses to start and says to run `make run` or set DJANGO_SECRET_KEY.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or key_file.read(DATA_DIR)
if not SECRET_KEY:
    raise ImproperlyConfigured(key_file.missing(DATA_DIR))
DEBUG = env.bool("DJANGO_DEBUG", default=False)
PRODUCTION = env.bool("DJANGO_PRODUCTION", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "accounts",
    "accounts.audit",
    "models_catalog",
    "servers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header (SECURE_CSP below) on every answer.
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The client's address, for the audit entries written while serving the request.
    "accounts.audit.log.AuditAddressMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Default-deny: every URL needs an approved user unless accounts/access.py opens it.
    "accounts.middleware.AccessMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "accounts.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite in DATA_DIR unless DATABASE_URL says otherwise (e.g. postgres://…).
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside one writer, and
    # IMMEDIATE transactions wait for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Tests run Celery workers in other processes, so the test database is a file too.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Each web thread keeps its connection between requests. For SQLite too: opening one costs
# ~2.5 ms of CPU (Django registers its SQL functions on every new connection), which every
# gateway request paid before its first token (docs/benchmarks.md §1).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache lives in the database so that login throttling and page caches keep working
# while Redis is down (the portal degrades, it does not fail).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "portal_cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

# django-allauth: email + password, throttled logins.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="none")
ACCOUNT_LOGOUT_ON_GET = False
# Wrong API keys from one address before /v1 answers 429 for the rest of the minute.
API_KEY_FAILURES_PER_MINUTE = env.int("MLX_PORTAL_API_KEY_FAILURES_PER_MINUTE", default=20)
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key", "signup": "20/m/ip", "login": "30/m/ip"}
# The first sign-up becomes the admin; later ones wait for approval (accounts/approval.py).
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# What emails (subject and greeting: accounts/adapter.py) and the Django admin call the portal;
# without the sites framework allauth would name it after the host and port it was reached at.
PORTAL_NAME = "MLX Portal"
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{PORTAL_NAME}] "
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"


def _flag(name: str, default: bool) -> bool:
    """true/false (or 1/0, yes/no, on/off) from the environment; anything else is refused at
    start-up (django-environ would read a typo as false)."""
    raw = env.str(name, default=str(default).lower()).strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: use true or false (the default is {default}).")


# Password sign-up; false leaves single sign-on as the way in (existing accounts still log in
# with their password).
PASSWORD_SIGNUP = _flag("MLX_PORTAL_PASSWORD_SIGNUP", True)


def _oidc_apps() -> list[dict]:
    """The OpenID Connect providers named in MLX_PORTAL_OIDC_PROVIDERS, each from its own
    MLX_PORTAL_OIDC_<ID>_… variables (docs/accounts.md, "Single sign-on"), checked here so that
    a mistake stops the portal with what to set rather than failing at someone's sign-in."""
    listed = env.str("MLX_PORTAL_OIDC_PROVIDERS", default="")
    apps: list[dict] = []
    for provider_id in filter(None, (part.strip() for part in listed.split(","))):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", provider_id):
            raise ImproperlyConfigured(
                f"MLX_PORTAL_OIDC_PROVIDERS={listed!r}: {provider_id!r} is not a provider id. Use "
                "lower-case letters, digits and dashes (up to 32, e.g. corp): it becomes part of "
                "the sign-in address and of the variables that configure it."
            )
        if listed.replace(" ", "").split(",").count(provider_id) > 1:
            raise ImproperlyConfigured(
                f"MLX_PORTAL_OIDC_PROVIDERS={listed!r} names {provider_id!r} twice."
            )
        prefix = f"MLX_PORTAL_OIDC_{provider_id.upper().replace('-', '_')}_"

        def value(suffix: str, example: str, required: bool = True, _id: str = provider_id) -> str:
            name = f"MLX_PORTAL_OIDC_{_id.upper().replace('-', '_')}_{suffix}"
            text = env.str(name, default="").strip()
            if required and not text:
                raise ImproperlyConfigured(
                    f"{name} is not set: single sign-on provider {_id!r} needs it ({example})."
                )
            return text

        issuer = value("ISSUER", "its issuer URL, e.g. https://login.example.com/realms/team")
        parts = urlsplit(issuer)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ImproperlyConfigured(
                f"{prefix}ISSUER={issuer!r}: give the issuer URL the provider publishes (https://"
                "host/path, no query), the one its /.well-known/openid-configuration is under."
            )
        if PRODUCTION and parts.scheme != "https":
            raise ImproperlyConfigured(
                f"{prefix}ISSUER={issuer!r}: in production (DJANGO_PRODUCTION) the issuer must be "
                "reached over https, or tokens would cross the network in clear."
            )
        scopes = value("SCOPES", "", required=False).replace(",", " ").split() or [
            "openid", "profile", "email"
        ]  # fmt: skip
        if not {"openid", "email"} <= set(scopes):
            raise ImproperlyConfigured(
                f"{prefix}SCOPES={' '.join(scopes)!r}: include openid and email (the portal "
                "signs people in by their email), e.g. 'openid profile email groups'."
            )
        label = value("LABEL", "", required=False) or f"Sign in with {provider_id.title()}"
        apps.append(
            {
                "provider_id": provider_id,
                "name": label[:80],
                "client_id": value("CLIENT_ID", "the client id the provider gave the portal"),
                "secret": value("SECRET", "the client secret the provider gave the portal"),
                "settings": {"server_url": issuer.rstrip("/"), "scope": scopes},
            }
        )
    return apps


def _words(name: str, pattern: str, example: str, lower: bool = False) -> list[str]:
    words = [w.strip() for w in env.str(name, default="").split(",") if w.strip()]
    for word in words:
        if not re.fullmatch(pattern, word):
            raise ImproperlyConfigured(f"{name}: {word!r} is not {example}.")
    return [w.lower() for w in words] if lower else words


# django-allauth's single sign-on, through its OpenID Connect provider (accounts/sso/): the ID
# token's signature is always checked, PKCE on, tokens not stored.
SOCIALACCOUNT_PROVIDERS = {
    "openid_connect": {
        "provider_class": "accounts.sso.provider.PortalOpenIDConnectProvider",
        "OAUTH_PKCE_ENABLED": True,
        "APPS": _oidc_apps(),
    }
}
# The sign-in form posts to the portal, which redirects to the provider's sign-in page: the
# Content-Security-Policy's form-action (below) lets the browser follow to the issuers' origins.
OIDC_ORIGINS = sorted(
    {
        "{0.scheme}://{0.netloc}".format(urlsplit(app["settings"]["server_url"]))
        for app in SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]
    }
)
SOCIALACCOUNT_ADAPTER = "accounts.sso.adapter.SocialAccountAdapter"
SOCIALACCOUNT_AUTO_SIGNUP = True
# An account with the same email is linked only when the provider says the email is verified.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_STORE_TOKENS = False
# Approval on first sign-in through a provider (otherwise pending, as everyone): an email in
# one of these domains (verified by the provider), or one of these values in the claim.
OIDC_APPROVE_DOMAINS = _words(
    "MLX_PORTAL_OIDC_APPROVE_DOMAINS",
    r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "a domain, such as example.com",
    True,
)
OIDC_CLAIM = env.str("MLX_PORTAL_OIDC_CLAIM", default="").strip()
if OIDC_CLAIM and not re.fullmatch(r"[A-Za-z0-9_:./-]{1,100}", OIDC_CLAIM):
    raise ImproperlyConfigured(
        f"MLX_PORTAL_OIDC_CLAIM={OIDC_CLAIM!r}: give the name of one claim, such as groups."
    )
OIDC_APPROVE_VALUES = _words(
    "MLX_PORTAL_OIDC_APPROVE_VALUES", r"[^\s]{1,150}", "a claim value (no spaces)"
)
# The claim's values name the user's groups (the teams) on every sign-in through a provider.
OIDC_GROUPS_FROM_CLAIM = _flag("MLX_PORTAL_OIDC_GROUPS_FROM_CLAIM", False)
if (OIDC_APPROVE_VALUES or OIDC_GROUPS_FROM_CLAIM) and not OIDC_CLAIM:
    raise ImproperlyConfigured(
        "MLX_PORTAL_OIDC_APPROVE_VALUES and MLX_PORTAL_OIDC_GROUPS_FROM_CLAIM read a claim of the "
        "ID token: name it in MLX_PORTAL_OIDC_CLAIM (e.g. groups)."
    )

# What the browser may do with the portal's pages (docs/accounts.md, "Browser security").
# Content-Security-Policy: scripts, styles, fonts and fetches from the portal itself only; no
# inline script or style, no eval (htmx runs with allowEval off: templates/base.html), no
# plugin, no <base>, no framing, forms post only here. Images may also be data: URIs (Pico's
# icons). Even markup that slipped through escaping cannot run script under it.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF, *OIDC_ORIGINS],  # single sign-on's redirect to the provider
}
X_FRAME_OPTIONS = "DENY"  # for browsers without frame-ancestors
# The strictest policy that still lets a POST say where it came from: Django's CSRF check
# over HTTPS and the login's `next` after a POST read the same-origin Referer.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Cookies: never readable by scripts (the pages carry the CSRF token in their forms and in
# htmx's headers, and no script reads the cookie), Secure in production (below).
# SameSite=Lax, not Strict, for both: a Strict session cookie is not sent when a link from
# email or chat is followed, so an admin opening the sign-up notice's link would land logged
# out; and a Strict CSRF cookie would be missing from such an arrival, so Django would set a
# new one and break the forms open in the portal's other tabs. Lax still keeps both cookies
# off every cross-site POST and sub-request, and every change is a POST with a CSRF token.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "accounts.views.csrf_failure"  # the portal's 403 page, not Django's

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"

# Email: admins are told of sign-ups. Console backend unless EMAIL_URL is set.
_email = env.email_url("EMAIL_URL", default="consolemail://")
_email_options = {
    option: _email[key]
    for option, key in [
        ("host", "EMAIL_HOST"),
        ("port", "EMAIL_PORT"),
        ("username", "EMAIL_HOST_USER"),
        ("password", "EMAIL_HOST_PASSWORD"),
        ("use_tls", "EMAIL_USE_TLS"),
        ("use_ssl", "EMAIL_USE_SSL"),
    ]
    if _email.get(key)
}
if _email["EMAIL_BACKEND"] != "django.core.mail.backends.smtp.EmailBackend":
    _email_options = {}
MAILERS = {"default": {"BACKEND": _email["EMAIL_BACKEND"], "OPTIONS": _email_options}}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="mlx-portal@localhost")

# Redis and Celery.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {
    # Re-adopt live model servers, mark dead or hung ones, restart with back-off, stop idle ones.
    "servers-reconcile": {
        "task": "servers.tasks.reconcile",
        "schedule": env.float("MLX_PORTAL_RECONCILE_INTERVAL", default=3.0),
        "options": {"expires": 10},
    },
    # Re-queue downloads whose worker died (lease expired); see docs/downloads.md.
    "reconcile-downloads": {
        "task": "models_catalog.reconcile_downloads",
        "schedule": env.float("DOWNLOAD_RECONCILE_SECONDS", default=5.0),
        "options": {"expires": 30},
    },
    # /metrics counters: the settled usage records added to a checkpoint row
    # (servers/usage/metrics.py).
    "usage-totals": {
        "task": "servers.tasks.advance_usage_totals",
        "schedule": 300.0,
        "options": {"expires": 300},
    },
    # Usage records older than USAGE_RETENTION_DAYS go (docs/gateway.md, "Usage").
    "prune-usage": {
        "task": "servers.tasks.prune_usage",
        "schedule": 24 * 3600.0,
        "options": {"expires": 3600},
    },
}
# Days of usage records kept (the Usage page, /metrics); 0 keeps them forever.
USAGE_RETENTION_DAYS = env.int("MLX_PORTAL_USAGE_RETENTION_DAYS", default=400)


def _bounded(
    name: str, default: float, low: float, high: float, unit: str, whole: bool = False
) -> float:
    """A number from the environment, refused at start-up with what to set when it is not a
    number from `low` to `high` (a whole one if `whole`); django-environ would only say
    "could not convert"."""
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high or (whole and not value.is_integer()):  # NaN fails too
        kind = "whole number" if whole else "number"
        raise ImproperlyConfigured(
            f"{name}={raw!r}: use a {kind} of {unit} from {low:g} to {high:g}; "
            f"the default is {default:g}."
        )
    return value


# This machine, as a host of the portal (docs/hosts.md).
HOST_NAME = env.str("MLX_PORTAL_HOST", default="local")
# Where the other hosts' web tiers reach this host's web tier (for the hop to its model
# servers), e.g. http://studio-2.lan:8000. Reported by this host's worker in its heartbeat.
HOST_WEB_URL = env.str("MLX_PORTAL_HOST_URL", default="").rstrip("/")
# A host's worker writes its facts every HEARTBEAT seconds; silent for OFFLINE_AFTER, the host
# shows offline and its servers "unknown".
HOST_HEARTBEAT_SECONDS = env.float("MLX_PORTAL_HEARTBEAT_SECONDS", default=5.0)
HOST_OFFLINE_AFTER = env.float("MLX_PORTAL_HOST_OFFLINE_AFTER", default=30.0)
# The same worker measures its running model servers (memory, CPU) this often, for the tiles
# of every host's Servers page (servers/supervision/monitor.py).
SERVER_STATS_SECONDS = _bounded("MLX_PORTAL_SERVER_STATS_SECONDS", 2, 0.1, 600, "seconds")
# The secret shared by every host's web tier; each host accepts hop requests carrying the
# token derived from it for its own name (servers/gateway/hop.py). Empty: no hop between hosts.
HOP_SECRET = env.str("MLX_PORTAL_HOP_SECRET", default="")

# Model servers (servers/, see docs/servers.md). Times in seconds.
SERVER_PORT_RANGE = tuple(
    int(p) for p in env.str("MLX_PORTAL_SERVER_PORTS", default="8100-8999").split("-", 1)
)
SERVER_START_TIMEOUT = env.float("MLX_PORTAL_SERVER_START_TIMEOUT", default=300.0)
SERVER_STOP_GRACE = env.float("MLX_PORTAL_SERVER_STOP_GRACE", default=10.0)
SERVER_PROBE_TIMEOUT = env.float("MLX_PORTAL_SERVER_PROBE_TIMEOUT", default=5.0)
SERVER_HUNG_CHECKS = env.int("MLX_PORTAL_SERVER_HUNG_CHECKS", default=3)
SERVER_MAX_RESTARTS = env.int("MLX_PORTAL_SERVER_MAX_RESTARTS", default=3)
SERVER_RESTART_BACKOFF = env.float("MLX_PORTAL_SERVER_RESTART_BACKOFF", default=5.0)
SERVER_RESTART_RESET_AFTER = env.float("MLX_PORTAL_SERVER_RESTART_RESET_AFTER", default=600.0)
SERVER_MEMORY_HEADROOM = env.float("MLX_PORTAL_SERVER_MEMORY_HEADROOM", default=1.2)
# What a server needs besides its weights and KV cache (Python, MLX, the tokenizer), counted in
# its host's memory plan (servers/memory_plan.py, docs/servers.md "The memory plan").
SERVER_MEMORY_OVERHEAD_MB = int(
    _bounded("MLX_PORTAL_SERVER_MEMORY_OVERHEAD_MB", 512, 0, 1_048_576, "MB", whole=True)
)
SERVER_ADAPTER_DIRS = [
    Path(p).expanduser().resolve()
    for p in env.list("MLX_PORTAL_ADAPTER_DIRS", default=[str(DATA_DIR / "adapters")])
]
SERVER_LOGS_KEPT = env.int("MLX_PORTAL_SERVER_LOGS_KEPT", default=10)
# A tile says so when a running server has worked on one request this long (one long prompt
# keeps a server from everyone else; the model server stops it when its client leaves).
SERVER_BUSY_NOTICE_SECONDS = _bounded(
    "MLX_PORTAL_SERVER_BUSY_NOTICE_SECONDS", 60, 1, 86400, "seconds"
)

# Fair sharing (servers/sharing/, docs/sharing.md): a web process renews the leases of its
# requests' slots and queue places; when it dies they come back after this long.
SHARING_LEASE_SECONDS = _bounded("MLX_PORTAL_SHARING_LEASE_SECONDS", 30, 3, 3600, "seconds")

# OpenAI-compatible gateway, chat and metrics (servers/gateway/, docs/gateway.md).
# 32 MiB: room for a vision request's images (3 per message of up to 5 MiB, base64: 4/3 larger;
# servers/gateway/images.py), so an image over its own limit gets that limit's message.
GATEWAY_MAX_BODY_BYTES = env.int("MLX_PORTAL_GATEWAY_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# The largest audio file /v1/audio/transcriptions takes (OpenAI's own limit: 25 MiB). Read in
# memory, never to disk (servers/gateway/engines.py); nginx's limit for that path follows it.
GATEWAY_MAX_AUDIO_BYTES = _bounded(
    "MLX_PORTAL_GATEWAY_MAX_AUDIO_BYTES", 25 * 1024 * 1024, 1024, 32 * 1024 * 1024, "bytes"
)
GATEWAY_CONNECT_TIMEOUT = env.float("MLX_PORTAL_GATEWAY_CONNECT_TIMEOUT", default=5.0)
# Longest silence tolerated from a model server (prompt processing sends keep-alives).
GATEWAY_READ_TIMEOUT = env.float("MLX_PORTAL_GATEWAY_READ_TIMEOUT", default=300.0)
GATEWAY_MAX_CONNECTIONS = env.int("MLX_PORTAL_GATEWAY_MAX_CONNECTIONS", default=128)


# After its first token, an API stream is passed on at most once per this many ms: the tokens
# that arrived meanwhile leave together (fewer wake-ups and writes per token). 0: every read.
# With several streams in one web process the interval grows with their number (a process
# wakes about as often for 16 streams as for one), up to the _MAX (docs/gateway.md).
GATEWAY_STREAM_INTERVAL_MS = _bounded(
    "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MS", 20, 0, 1000, "milliseconds"
)
GATEWAY_STREAM_INTERVAL_MAX_MS = _bounded(
    "MLX_PORTAL_GATEWAY_STREAM_INTERVAL_MAX_MS",
    max(50, GATEWAY_STREAM_INTERVAL_MS),
    GATEWAY_STREAM_INTERVAL_MS,
    1000,
    "milliseconds",
)
# Streams re-check that their user is approved (and their key live) at most this often.
STREAM_ACCESS_CHECK_SECONDS = env.float("MLX_PORTAL_STREAM_ACCESS_CHECK_SECONDS", default=1.0)
# How long a request waits for an on-demand start before answering 503.
GATEWAY_START_TIMEOUT = env.float("MLX_PORTAL_GATEWAY_START_TIMEOUT", default=180.0)
CHAT_ATTACHMENT_MAX_BYTES = env.int("MLX_PORTAL_CHAT_ATTACHMENT_MAX_BYTES", default=256 * 1024)
CHAT_ATTACHMENT_MAX_FILES = env.int("MLX_PORTAL_CHAT_ATTACHMENT_MAX_FILES", default=5)
# `/metrics` answers localhost, or `Authorization: Bearer <METRICS_TOKEN>` when one is set.
METRICS_TOKEN = env.str("MLX_PORTAL_METRICS_TOKEN", default="")
METRICS_ALLOW_LOCALHOST = env.bool("MLX_PORTAL_METRICS_ALLOW_LOCALHOST", default=True)


def _networks(name: str, default: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or networks (CIDR) from the environment, refused at start-up
    with what to write when one is neither."""
    raw = env.str(name, default=default)
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}={raw!r}: {item!r} is not an IP address or network (such as 10.0.0.0/8). "
                f"List the reverse proxies in front of the portal, separated by commas; the "
                f"default is {default!r} (the nginx front on this machine), empty trusts none."
            ) from None
    return tuple(networks)


# Reverse proxies whose X-Forwarded-For is believed: the client's address (for the wrong-API-key
# counter, allauth's login throttling and /metrics' localhost rule) is read through them
# (common/client_address.py). The default trusts this machine: the shipped nginx front.
TRUSTED_PROXIES = _networks("MLX_PORTAL_TRUSTED_PROXIES", "127.0.0.1,::1")

# Hugging Face Hub. models_catalog/hub.py passes these explicitly to every call.
HF_ENDPOINT = env.str("HF_ENDPOINT", default="https://huggingface.co").rstrip("/")
HF_HUB_CACHE = Path(
    env.str(
        "HF_HUB_CACHE",
        default=str(Path(env.str("HF_HOME", default="~/.cache/huggingface")) / "hub"),
    )
).expanduser()
HF_TOKEN = env.str("HF_TOKEN", default="")

# Model catalog (models_catalog/catalog.py, docs/catalog.md).
HUB_TIMEOUT = env.float("HUB_TIMEOUT", default=5.0)  # seconds, every Hub request
CATALOG_PAGE_SIZE = env.int("CATALOG_PAGE_SIZE", default=30)  # models per Hub page
CATALOG_MAX_HUB_PAGES = env.int("CATALOG_MAX_HUB_PAGES", default=4)  # per filtered page
CATALOG_FETCH_WORKERS = env.int("CATALOG_FETCH_WORKERS", default=64)  # Hub file reads at once
CATALOG_LISTING_TTL = env.int("CATALOG_LISTING_TTL", default=60)  # seconds a Hub page is reused
CATALOG_CONFIG_DEADLINE = env.float("CATALOG_CONFIG_DEADLINE", default=10.0)  # seconds per page
CATALOG_CONFIG_RETRY = env.int("CATALOG_CONFIG_RETRY", default=600)  # after a failed read
CATALOG_DETAIL_TTL = env.int("CATALOG_DETAIL_TTL", default=600)  # detail page refresh, seconds

# Downloads (docs/downloads.md): a run holds a lease renewed by its heartbeat; a lease that
# expires means the worker died and the download is queued again.
DOWNLOAD_LEASE_SECONDS = env.float("DOWNLOAD_LEASE_SECONDS", default=20.0)
DOWNLOAD_HEARTBEAT_SECONDS = env.float("DOWNLOAD_HEARTBEAT_SECONDS", default=1.0)
DOWNLOAD_REQUEUE_SECONDS = env.float("DOWNLOAD_REQUEUE_SECONDS", default=60.0)
DOWNLOAD_DISK_RESERVE_BYTES = env.int("DOWNLOAD_DISK_RESERVE_BYTES", default=512 * 1024 * 1024)
# Files of one download fetched at once (as `hf download`'s 8 workers): a CDN caps each
# connection, so one file at a time leaves most of a fast link idle.
DOWNLOAD_FILES_AT_ONCE = int(_bounded("DOWNLOAD_FILES_AT_ONCE", 8, 1, 32, "files", whole=True))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # huggingface_hub's HTTP client logs every request at INFO.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# ---------------------------------------------------------------------------------------------
# Production (DJANGO_PRODUCTION=1): HTTPS only, secure cookies, HSTS. `manage.py check --deploy`
# passes with these on.
# ---------------------------------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
