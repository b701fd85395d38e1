"""Test settings: PostgreSQL and Redis, as in production; fast password hashing."""

import os
import uuid

# The role `platform/bin/ensure-services test` creates; a test-only password, no secret.
os.environ.setdefault(
    "DATABASE_URL", "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432/sipcloud"
)

from config.settings.base import *  # noqa: E402, F403

SECRET_KEY = "test-only-secret-key-not-used-anywhere-else-0123456789"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# A Redis database of the tests' own, so queued tasks never reach a running platform.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/11")
# The log-in/signup/reset throttle's own Redis database, and keys of this process only (the
# suite's fixture gives each test a prefix of its own too: tests/conftest.py).
SIPCLOUD_THROTTLE_REDIS_URL = "redis://127.0.0.1:6379/14"
SIPCLOUD_THROTTLE_KEY_PREFIX = f"sipcloud-test:{uuid.uuid4().hex}:throttle:"
# Pages render without `collectstatic` having run: no manifest, no STATIC_ROOT to serve.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT = None
# ...and the portal under gunicorn (tests/portal.py) serves the apps' static files itself:
# the pages' scripts and styles are files (the Content-Security-Policy allows no other).
WHITENOISE_USE_FINDERS = True
# Tests read English unless they ask for another language (the Accept-Language header, a
# member's profile): the language a request without either gets in production, Chinese, is
# tested with this setting changed.
LANGUAGE_CODE = "en"
