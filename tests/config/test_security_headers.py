"""Every page carries a Content-Security-Policy that runs only the portal's own files; no
template needs more; production cookies are Secure, HttpOnly and SameSite, with HSTS.

That the pages with scripts still work under the policy is shown in Chromium: the live calls
page in tests/browser/test_live_calls_browser.py, the signup page in test_signup_browser.py.
"""

import json
import re
import secrets

import pytest
from django.urls import reverse

from tests.config.test_settings import manage
from tests.test_i18n import project_templates

EXPECTED = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def assert_strict(response) -> None:
    directives = policy(response)
    for name, value in EXPECTED.items():
        assert directives[name] == value, (name, directives)
    assert "unsafe" not in response["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["login", "password_reset", "tenants:signup"])
def test_public_pages_carry_the_policy(client, db, name):
    assert_strict(client.get(reverse(name)))


def test_member_pages_carry_the_policy(owner_client, tenant_a):
    server = tenant_a.server
    for url in [
        reverse("tenants:server-list"),
        server.get_absolute_url(),
        reverse("tenants:live-calls", args=[server.pk]),
        reverse("tenants:cdr-table", args=[server.pk, "basic"]),
    ]:
        response = owner_client.get(url)
        assert response.status_code == 200, url
        assert_strict(response)


def test_refusals_carry_the_policy_too(client, db):
    for _ in range(5):
        response = client.post(reverse("login"), {"username": "a@b.example", "password": "x"})
    assert response.status_code == 429
    assert_strict(response)


@pytest.mark.parametrize("path", ["portal/portal.css", "portal/confirm.js", "portal/live_calls.js"])
def test_the_pages_own_files_are_served(client, db, path):
    response = client.get(f"/static/{path}")
    assert response.status_code == 200


INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "style element": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"\sstyle=", re.I),
    "event handler": re.compile(r"\son[a-z]+=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def test_no_template_needs_more_than_the_policy_allows():
    found = [
        (str(path), what)
        for path in project_templates()
        for what, pattern in INLINE.items()
        if pattern.search(path.read_text(errors="replace"))
    ]
    assert found == []


def test_production_cookies_and_hsts():
    names = [
        "SESSION_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "SESSION_COOKIE_SAMESITE",
        "CSRF_COOKIE_SECURE",
        "CSRF_COOKIE_HTTPONLY",
        "CSRF_COOKIE_SAMESITE",
        "LANGUAGE_COOKIE_SECURE",
        "LANGUAGE_COOKIE_HTTPONLY",
        "LANGUAGE_COOKIE_SAMESITE",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_SSL_REDIRECT",
    ]
    result = manage(
        "shell",
        "-c",
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {names!r}}}))",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.splitlines()[-1])
    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "CSRF_COOKIE_SECURE": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SAMESITE": "Lax",
        "LANGUAGE_COOKIE_SECURE": True,
        "LANGUAGE_COOKIE_HTTPONLY": True,
        "LANGUAGE_COOKIE_SAMESITE": "Lax",
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_SSL_REDIRECT": True,
    }
