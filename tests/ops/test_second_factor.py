"""Operators' second factor: /ops/ and /admin/ need a code from an authenticator app (or a
recovery code) after the password; enrolment, recovery codes, the reset command. Members of
tenants are not concerned."""

import base64
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from ops import second_factor
from ops.models import PolicyChange
from tests.factories import make_member
from tests.second_factor import authenticator_of, current_code, verified_login

pytestmark = pytest.mark.django_db

VERIFY = reverse("ops:second-factor-verify")
ENROL = reverse("ops:second-factor-enrol")
GUARDED = [
    reverse("ops:hosts"),
    reverse("ops:purge"),
    reverse("ops:second-factor"),
    reverse("admin:index"),
    reverse("admin:sipnodes_virtualserver_changelist"),
    reverse("admin:tenants_user_changelist"),
]


def next_of(url: str) -> str:
    return f"?next={quote(url, safe='')}"


def page(response) -> str:
    return response.content.decode()


def is_verified(client: Client) -> bool:
    return DEVICE_ID_SESSION_KEY in client.session


# ---- without the code ---------------------------------------------------------------------


@pytest.mark.parametrize("url", GUARDED)
def test_an_operator_with_the_password_alone_is_sent_to_the_verify_page(client, operator, url):
    authenticator_of(operator)
    client.force_login(operator)
    response = client.get(url)
    assert response.status_code == 302
    assert response.url == VERIFY + next_of(url)


@pytest.mark.parametrize("url", GUARDED)
def test_an_operator_without_a_second_factor_is_sent_to_set_one_up(client, operator, url):
    client.force_login(operator)
    response = client.get(url)
    assert response.status_code == 302
    assert response.url == ENROL + next_of(url)


def test_an_unverified_operator_cannot_change_anything(client, operator, host):
    authenticator_of(operator)
    client.force_login(operator)
    response = client.post(
        reverse("ops:policy"),
        {"inactivity_days": 365, "cap_per_run": 100, "notice_days": 7, "grace_days": 0},
    )
    assert response.status_code == 302 and response.url.startswith(VERIFY)
    assert not PolicyChange.objects.exists()
    response = client.post(reverse("ops:second-factor-recovery-codes"))
    assert response.status_code == 302 and response.url.startswith(VERIFY)
    assert not StaticDevice.objects.exists()


# ---- with the code ------------------------------------------------------------------------


def test_a_staff_login_with_the_password_then_the_code_reaches_the_admin(client, operator):
    """The admin's own login form, then the verify page, then the admin."""
    device = authenticator_of(operator)
    response = client.post(
        reverse("admin:login"),
        {"username": "ops@example.com", "password": "x" * 12, "next": "/admin/"},
    )
    assert response.status_code == 302 and response.url == "/admin/"
    response = client.get("/admin/")
    assert response.status_code == 302 and response.url == VERIFY + next_of("/admin/")

    form = client.get(response.url)
    assert form.status_code == 200
    assert "Enter the six-digit code your authenticator app shows" in page(form)
    assert 'name="next" value="/admin/"' in page(form)

    session_before = client.session.session_key
    response = client.post(VERIFY, {"code": current_code(device), "next": "/admin/"})
    assert response.status_code == 302 and response.url == "/admin/"
    assert client.session.session_key != session_before  # a new session key for more rights
    assert client.get("/admin/").status_code == 200
    assert client.get(reverse("ops:hosts")).status_code == 200
    assert client.get(reverse("admin:sipnodes_virtualserver_changelist")).status_code == 200


def test_a_wrong_code_is_refused_and_wrong_codes_slow_the_next_tries(client, operator):
    device = authenticator_of(operator)
    client.force_login(operator)
    right = current_code(device)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    response = client.post(VERIFY, {"code": wrong})
    assert response.status_code == 200
    assert "This code is wrong, or it has been used already." in page(response)
    assert not is_verified(client)
    assert client.get(reverse("ops:hosts")).status_code == 302

    # Right after a wrong one, even the right code waits (1, 2, 4, ... seconds).
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_timestamp=timezone.now())
    response = client.post(VERIFY, {"code": right})
    assert re.search(r"Too many wrong codes: wait \d+ seconds?, then try again.", page(response))
    assert not is_verified(client)

    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timedelta(seconds=5)
    )
    response = client.post(VERIFY, {"code": right})
    assert response.status_code == 302 and response.url == reverse("ops:hosts")
    assert client.get(reverse("ops:hosts")).status_code == 200


def test_a_code_works_once(client, operator):
    device = authenticator_of(operator)
    code = current_code(device)
    client.force_login(operator)
    assert client.post(VERIFY, {"code": code}).status_code == 302
    other = Client()
    other.force_login(operator)
    response = other.post(VERIFY, {"code": code})
    assert "This code is wrong, or it has been used already." in page(response)


def test_the_verify_page_goes_only_to_our_own_pages(client, operator):
    device = authenticator_of(operator)
    client.force_login(operator)
    response = client.post(VERIFY, {"code": current_code(device), "next": "https://evil.example/"})
    assert response.url == reverse("ops:hosts")


def test_a_recovery_code_works_once(client, operator):
    authenticator_of(operator)
    codes = second_factor.new_recovery_codes(operator)
    assert len(codes) == 10 and len(set(codes)) == 10

    client.force_login(operator)
    response = client.post(VERIFY, {"code": codes[0].upper(), "next": "/admin/"}, follow=True)
    assert response.redirect_chain == [("/admin/", 302)]
    assert "Recovery code accepted; it will not work again. 9 recovery codes left" in page(response)
    assert second_factor.recovery_codes_left(operator) == 9

    again = Client()
    again.force_login(operator)
    response = again.post(VERIFY, {"code": codes[0]})
    assert "This code is wrong, or it has been used already." in page(response)
    assert not is_verified(again)
    StaticDevice.objects.update(throttling_failure_count=0, throttling_failure_timestamp=None)
    assert again.post(VERIFY, {"code": codes[1]}).status_code == 302
    assert again.get("/admin/").status_code == 200


def test_an_operator_who_signed_in_with_a_recovery_code_and_has_no_authenticator_sets_one_up(
    client, operator
):
    codes = second_factor.new_recovery_codes(operator)
    client.force_login(operator)
    assert client.get("/ops/").url == VERIFY + next_of("/ops/")
    response = client.post(VERIFY, {"code": codes[0], "next": "/ops/"})
    assert response.url == ENROL + next_of("/ops/")


# ---- enrolment ----------------------------------------------------------------------------


def code_from_page(html: str) -> str:
    """What an authenticator app shows after the key on the enrolment page is typed in."""
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html).group(1).replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return f"{totp(key):06d}"


def test_enrolment_end_to_end(client, operator):
    client.force_login(operator)
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain == [(ENROL + next_of("/admin/"), 302)]
    html = page(response)
    assert '<svg width="' in html and 'class="segno"' in html  # the QR code
    assert "otpauth://totp/sipcloud%3Aops%40example.com?secret=" in html
    assert not re.findall(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    secret = re.search(r'id="totp-secret">[^<]+<', html).group(0)
    assert secret in page(client.get(ENROL))  # the same key until it is confirmed
    assert not TOTPDevice.objects.filter(confirmed=True).exists()
    assert client.get("/admin/").status_code == 302  # not before the first code

    code = code_from_page(html)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    response = client.post(ENROL, {"code": wrong, "next": "/admin/"})
    assert "This code is wrong, or it has been used already." in page(response)
    TOTPDevice.objects.update(throttling_failure_timestamp=None, throttling_failure_count=0)

    response = client.post(ENROL, {"code": code, "next": "/admin/"})
    assert response.status_code == 302
    assert response.url == reverse("ops:second-factor") + next_of("/admin/")
    shown = client.get(response.url)
    html = page(shown)
    assert "Your authenticator is set up." in html
    assert "they are not shown again" in html
    codes = re.findall(r'<li class="secret">([a-z2-7]{8})</li>', html)
    assert len(codes) == 10
    assert sorted(codes) == sorted(StaticToken.objects.values_list("token", flat=True))
    assert 'id="continue" href="/admin/"' in html
    assert shown["Cache-Control"].startswith("max-age=0, no-cache, no-store")

    html = page(client.get(reverse("ops:second-factor")))  # shown once
    assert not re.findall(r'<li class="secret">', html)
    assert "10 unused recovery codes." in html
    assert client.get("/admin/").status_code == 200

    # The next login asks for a code: the authenticator's or a recovery code.
    later = Client()
    later.force_login(operator)
    assert later.get("/admin/").url == VERIFY + next_of("/admin/")
    assert later.post(VERIFY, {"code": codes[3], "next": "/admin/"}).url == "/admin/"
    assert later.get("/admin/").status_code == 200


def test_an_operator_with_a_second_factor_cannot_enrol_another_before_verifying(client, operator):
    """Else a stolen password would be enough to replace the authenticator."""
    authenticator_of(operator)
    client.force_login(operator)
    response = client.get(ENROL)
    assert response.status_code == 302 and response.url == VERIFY
    assert client.post(ENROL, {"code": "123456"}).url == VERIFY
    assert TOTPDevice.objects.count() == 1


def test_a_verified_operator_replaces_the_authenticator(client, operator):
    old = verified_login(client, operator)
    html = page(client.get(ENROL))
    assert "This replaces your current authenticator." in html
    assert TOTPDevice.objects.get(confirmed=True) == old  # until the new one is confirmed

    response = client.post(ENROL, {"code": code_from_page(html)})
    assert response.url == reverse("ops:second-factor")
    new = TOTPDevice.objects.get()
    assert new != old and new.confirmed
    assert client.session[DEVICE_ID_SESSION_KEY] == new.persistent_id
    assert client.get("/ops/").status_code == 200


# ---- recovery codes and reset -------------------------------------------------------------


def test_an_operator_makes_new_recovery_codes_and_the_old_ones_stop_working(client, operator):
    old = second_factor.new_recovery_codes(operator)
    verified_login(client, operator)
    assert "10 unused recovery codes." in page(client.get(reverse("ops:second-factor")))

    response = client.post(reverse("ops:second-factor-recovery-codes"), follow=True)
    html = page(response)
    assert "New recovery codes made: the earlier ones no longer work." in html
    new = re.findall(r'<li class="secret">([a-z2-7]{8})</li>', html)
    assert len(new) == 10 and not set(new) & set(old)

    fresh = Client()
    fresh.force_login(operator)
    assert "wrong" in page(fresh.post(VERIFY, {"code": old[0]}))
    StaticDevice.objects.update(throttling_failure_count=0, throttling_failure_timestamp=None)
    assert fresh.post(VERIFY, {"code": new[0]}).status_code == 302


def test_an_operator_signed_in_with_a_recovery_code_stays_in_after_making_new_ones(
    client, operator
):
    authenticator_of(operator)
    codes = second_factor.new_recovery_codes(operator)
    client.force_login(operator)
    assert client.post(VERIFY, {"code": codes[0]}).status_code == 302
    response = client.post(reverse("ops:second-factor-recovery-codes"), follow=True)
    assert response.redirect_chain == [(reverse("ops:second-factor"), 302)]
    assert len(re.findall(r'<li class="secret">', page(response))) == 10
    assert client.get("/admin/").status_code == 200


def test_reset_second_factor_removes_every_device_and_ends_verified_sessions(
    client, operator, capsys, monkeypatch
):
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    verified_login(client, operator)
    second_factor.new_recovery_codes(operator)
    assert client.get("/ops/").status_code == 200

    call_command("reset_second_factor", "ops@example.com")
    assert "ops@example.com: 2 second-factor devices removed." in capsys.readouterr().out
    assert not TOTPDevice.objects.exists() and not StaticDevice.objects.exists()
    assert client.get("/ops/").url == ENROL + next_of("/ops/")

    with pytest.raises(CommandError, match="No user nobody@example.com"):
        call_command("reset_second_factor", "nobody@example.com")


def test_the_devices_are_not_in_the_admin():
    """The admin would show every operator's key and codes to any superuser."""
    assert not admin.site.is_registered(TOTPDevice)
    assert not admin.site.is_registered(StaticDevice)


# ---- tenant members -----------------------------------------------------------------------


def test_tenant_members_are_not_concerned(client, tenant_a):
    owner = make_member(tenant_a.tenant, "owner")
    client.force_login(owner)
    assert client.get(reverse("tenants:server-list")).status_code == 200
    assert client.get(tenant_a.server.get_absolute_url()).status_code == 200
    assert client.get(reverse("tenants:account")).status_code == 200
    # The operator pages stay hidden, and the admin sends them to its login, as before.
    assert client.get(reverse("ops:hosts")).status_code == 404
    response = client.get("/admin/")
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    for url in (VERIFY, ENROL, reverse("ops:second-factor")):
        assert client.get(url).status_code == 404
    assert not TOTPDevice.objects.exists()


def test_visitors_see_no_second_factor_pages(client, db):
    for url in (VERIFY, ENROL):
        assert client.get(url).status_code == 404
