import re

import pytest
from django.core import mail
from django.urls import reverse

from sipnodes.credentials import digest_ha1
from sipnodes.models import LocalUser, VirtualServer
from tenants.models import Membership, Tenant, User

GOOD = {
    "email": "Ada@Example.com",
    "password": "correct horse battery",
    "company_name": "Analytical Engines",
    "accept_terms": "on",
}


def signup(client, **changes):
    return client.post(reverse("tenants:signup"), {**GOOD, **changes})


def shown_passwords(html: str) -> dict[str, str]:
    return dict(re.findall(r"<td>(\d+)</td><td class=\"secret\">([^<]+)</td>", html))


def test_signup_creates_tenant_owner_and_a_free_server_with_three_users(client, host):
    response = signup(client)
    assert response.status_code == 200
    user = User.objects.get()
    assert user.email == "ada@example.com"
    membership = Membership.objects.get(user=user)
    assert membership.role == "owner"
    assert membership.tenant.name == "Analytical Engines"
    server = VirtualServer.objects.get(tenant=membership.tenant)
    assert (server.edition, server.paid_until, server.desired_state) == (5, None, "running")
    html = response.content.decode()
    assert server.sip_address in html

    passwords = shown_passwords(html)
    assert sorted(passwords) == ["100", "101", "102"]
    for number, password in passwords.items():
        assert password != number and len(password) >= 10
        local_user = LocalUser.objects.get(server=server, number=number)
        assert (local_user.ha1_md5, local_user.ha1_sha256) == digest_ha1(
            number, server.realm, password
        )
    assert len(set(passwords.values())) == 3


def test_passwords_are_shown_once_and_never_stored(client, host):
    html = signup(client).content.decode()
    passwords = shown_passwords(html)
    server = VirtualServer.objects.get()
    page = client.get(server.get_absolute_url()).content.decode()
    for password in passwords.values():
        assert password not in page
    stored = " ".join(str(v) for v in LocalUser.objects.values_list())
    for password in passwords.values():
        assert password not in stored


def test_signup_sends_a_verification_link_that_verifies(client, host):
    signup(client)
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/verify/\S+/)", mail.outbox[0].body).group(1)
    response = client.get(link)
    assert response.status_code == 302
    assert User.objects.get().email_verified_at is not None


def test_a_forged_verification_link_is_refused(client, host):
    signup(client)
    response = client.get(reverse("tenants:verify-email", args=["not-a-token"]))
    assert response.status_code == 400
    assert User.objects.get().email_verified_at is None


def test_with_verification_required_the_server_is_held_until_verified(client, host, settings):
    settings.SIPCLOUD_REQUIRE_EMAIL_VERIFICATION = True
    response = signup(client)
    assert "starts once you confirm" in response.content.decode()
    server = VirtualServer.objects.get()
    assert (server.desired_state, server.awaiting_verification) == ("stopped", True)
    link = re.search(r"http://testserver(/verify/\S+/)", mail.outbox[0].body).group(1)
    client.get(link)
    server.refresh_from_db()
    assert (server.desired_state, server.awaiting_verification) == ("running", False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"email": "taken@example.com"}, "already exists"),
        ({"password": "12345678"}, "This password is too short"),
        ({"password": "password123"}, "too common"),
        ({"accept_terms": ""}, "non-commercial terms"),
        ({"company_name": ""}, "This field is required"),
        ({"email": "not-an-address"}, "Enter a valid email address"),
    ],
)
def test_bad_signup_gets_a_clear_message_and_creates_nothing(client, host, changes, message):
    User.objects.create_user(username="taken@example.com", email="taken@example.com")
    response = signup(client, **changes)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert User.objects.count() == 1
    assert not Tenant.objects.exists()
    assert not VirtualServer.objects.exists()
    assert not mail.outbox


def test_signup_with_no_host_room_says_so_and_creates_nothing(client, db):
    response = signup(client)
    assert response.status_code == 503
    assert "cannot create new servers right now" in response.content.decode()
    assert not User.objects.exists() and not Tenant.objects.exists()


def test_login_logout_and_password_reset(client, host):
    signup(client)
    client.post(reverse("logout"))
    assert client.get(reverse("tenants:server-list")).status_code == 302

    response = client.post(
        reverse("login"), {"username": "ada@example.com", "password": GOOD["password"]}
    )
    assert response.status_code == 302
    assert client.get(reverse("tenants:server-list")).status_code == 200
    assert Tenant.objects.get().last_member_login_at is not None

    client.post(reverse("logout"))
    mail.outbox.clear()
    client.post(reverse("password_reset"), {"email": "ada@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_url = client.get(link).url
    client.post(
        form_url, {"new_password1": "a new long secret 42", "new_password2": "a new long secret 42"}
    )
    assert client.login(username="ada@example.com", password="a new long secret 42")
