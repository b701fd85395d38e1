"""Settings shared by every environment; values come from the environment.

The embedded defaults need no configuration: SQLite under var/, Redis on
loopback, console e-mail, and a development secret generated once into var/.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("SIPCLOUD_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def development_secret_key() -> str:
    """A secret made once per checkout, so sessions survive restarts without any setup."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Operators' second factor (ops/second_factor.py): authenticator apps, recovery codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "tenants",
    "sipnodes",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every page (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A log-in refused by the throttle gets a page saying why and until when.
    "tenants.login_throttle.LoginThrottleMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Staff reach /ops/ and /admin/ only with a session verified by a second factor.
    "ops.middleware.OperatorSecondFactorMiddleware",
    "config.middleware.MemberPreferencesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.template.context_processors.tz",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'sipcloud.sqlite3'}"),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default is shared by the web server, Celery and ingest processes: take
    # the write lock when a transaction begins, and wait for it, rather than failing with
    # "database is locked" when a reading transaction later tries to write. In WAL mode
    # (kept in the file once set), readers never block the one writer nor it them, and a
    # writer waits up to `timeout` seconds (the busy timeout) for the write lock. The
    # default `synchronous=FULL` stays: ingest acknowledges events only after a commit.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=20000",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Log-ins are throttled per address and per account before any password is compared
# (tenants/login_throttle.py, docs/security.md).
AUTHENTICATION_BACKENDS = [
    "tenants.login_throttle.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tenants:server-list"
LOGOUT_REDIRECT_URL = "login"
# The name operators' authenticator apps show beside the code.
OTP_TOTP_ISSUER = "sipcloud"

# Visitors get the language their browser asks for (Accept-Language), members the one in
# their profile; a request that asks for neither gets Chinese, the language most of the
# product's customers read first (docs/i18n.md). URLs are the same in every language.
LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Stored times are UTC; pages show them in the viewer's tenant time zone (Tenant.time_zone).
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# A new tenant's time zone when the signup form does not send the browser's.
SIPCLOUD_DEFAULT_TIME_ZONE = os.environ.get("SIPCLOUD_DEFAULT_TIME_ZONE", "Asia/Shanghai")

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The counters and cool-offs of the log-in, password reset and signup throttle.
SIPCLOUD_THROTTLE_REDIS_URL = os.environ.get("SIPCLOUD_THROTTLE_REDIS_URL", REDIS_URL)
SIPCLOUD_THROTTLE_KEY_PREFIX = "sipcloud:throttle:"

# Only the portal's own files: no inline script, style or event handler anywhere (the
# live calls page and the signup page load theirs from static/); EventSource and fetch
# only to the portal itself; no framing, plugins or foreign form targets. Images may be
# data: URIs (QR codes for authenticator apps). docs/security.md.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "sipcloud <noreply@localhost>")

# Hold a new virtual server stopped until its owner has verified the e-mail address.
SIPCLOUD_REQUIRE_EMAIL_VERIFICATION = env_bool("SIPCLOUD_REQUIRE_EMAIL_VERIFICATION", False)
# The SIP host created by `manage.py bootstrap` when none exists.
SIPCLOUD_DEFAULT_HOST_NAME = os.environ.get("SIPCLOUD_DEFAULT_HOST_NAME", "local")
SIPCLOUD_DEFAULT_HOST_ADDRESS = os.environ.get("SIPCLOUD_DEFAULT_HOST_ADDRESS", "127.0.0.1")

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "lapse-paid-editions": {"task": "sipnodes.tasks.lapse_paid_editions", "schedule": 3600.0},
    "poll-hosts": {"task": "sipnodes.tasks.poll_hosts", "schedule": 15.0},
    "delete-expired-cdrs": {"task": "sipnodes.tasks.delete_expired_cdrs", "schedule": 600.0},
    # The zombie purge, daily at 03:30 UTC; its policy (pause switch included) is in /ops/.
    "purge-zombies": {
        "task": "ops.tasks.purge_zombies",
        "schedule": crontab(hour=3, minute=30),
    },
}
# How long the purge waits for a host's agent to report a zombie's worker stopped; a
# worker not reported stopped by then keeps its server (it is reported, not deleted).
SIPCLOUD_PURGE_STOP_TIMEOUT = float(os.environ.get("SIPCLOUD_PURGE_STOP_TIMEOUT", "60"))
# Zombies whose workers the purge stops together (one task per host per batch).
SIPCLOUD_PURGE_STOP_BATCH = int(os.environ.get("SIPCLOUD_PURGE_STOP_BATCH", "500"))

# This machine as a SIP host: the node agent (Celery worker on queue `host.<name>`) and the
# host's supervisord keep their files here.
SIPCLOUD_HOST_NAME = os.environ.get("SIPCLOUD_HOST_NAME", SIPCLOUD_DEFAULT_HOST_NAME)
SIPCLOUD_NODE_DIR = Path(
    os.environ.get("SIPCLOUD_NODE_DIR", VAR_DIR / "hosts" / SIPCLOUD_HOST_NAME)
)
# The host's UPnP agent (docs/upnp.md): seconds between its rounds, asked per mapping
# (renewed at half), and allowed per request to the router.
SIPCLOUD_UPNP_POLL = float(os.environ.get("SIPCLOUD_UPNP_POLL", "5"))
SIPCLOUD_UPNP_LEASE = float(os.environ.get("SIPCLOUD_UPNP_LEASE", "1800"))
SIPCLOUD_UPNP_TIMEOUT = float(os.environ.get("SIPCLOUD_UPNP_TIMEOUT", "5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
AUTH_USER_MODEL = "tenants.User"
