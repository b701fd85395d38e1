"""Log-in, password reset and signup are throttled per address and per account, and the
owner always has a way in: an address they logged in from before, or a reset link.

Real Redis (the tests' own database, config/settings/test.py); each test has keys of its
own (tests/conftest.py).
"""

import re
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from tenants import throttle
from tenants.models import LoginAddress, User

PASSWORD = "the right password 42"
HOME = "198.51.100.7"  # where the owner logs in from
ATTACKER = "203.0.113.66"
ELSEWHERE = "192.0.2.10"  # a new place of the owner's (travelling)


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user(username="ada", email="ada@example.com", password=PASSWORD)


def log_in(client, address: str, password: str, email: str = "ada@example.com", **extra):
    return client.post(
        reverse("login"), {"username": email, "password": password}, REMOTE_ADDR=address, **extra
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def reset_link(client, address: str, email: str = "ada@example.com") -> str:
    mail.outbox.clear()
    response = client.post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)
    assert response.status_code == 302, response.content.decode()
    return re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)


def test_wrong_passwords_pause_logging_in_and_the_page_says_so(client, owner):
    for _ in range(4):
        response = log_in(client, ATTACKER, "guess")
        assert response.status_code == 200
        assert "Please enter a correct" in response.content.decode()
    # The fifth failure starts the cool-off and already says so.
    response = log_in(client, ATTACKER, "guess")
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed log-ins" in page
    assert "paused for 15 minutes" in page
    assert "reset your password" in page
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60

    # Even the right password is refused now, before it is compared, from that address...
    response = log_in(client, ATTACKER, PASSWORD)
    assert response.status_code == 429 and not logged_in(client)
    # ...and for that account from any address the owner never logged in from.
    response = log_in(client, ELSEWHERE, PASSWORD)
    assert response.status_code == 429 and not logged_in(client)


def test_the_owner_at_a_known_address_logs_in_through_an_attack(client, owner):
    assert log_in(client, HOME, PASSWORD).status_code == 302
    assert LoginAddress.objects.filter(user=owner, address=HOME).exists()
    client.post(reverse("logout"))

    for _ in range(20):  # from one address, then from many
        log_in(client, ATTACKER, "guess")
    for n in range(20):
        log_in(client, f"203.0.113.{n + 100}", "guess")
    assert log_in(client, ATTACKER, PASSWORD).status_code == 429
    assert log_in(client, ELSEWHERE, PASSWORD).status_code == 429

    response = log_in(client, HOME, PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_an_address_paused_for_guessing_does_not_pause_its_known_owners(client, owner, db):
    office = "198.51.100.99"  # an office behind one NAT: the owner and an attacker share it
    assert log_in(client, office, PASSWORD).status_code == 302
    client.post(reverse("logout"))
    for n in range(10):  # ten accounts guessed from the office's address
        log_in(client, office, "guess", email=f"someone{n}@example.com")
    User.objects.create_user(username="bob", email="bob@example.com", password=PASSWORD)
    # The address is paused for accounts that never logged in from it...
    assert log_in(client, office, PASSWORD, email="bob@example.com").status_code == 429
    assert not logged_in(client)
    # ...not for its owner, who has.
    assert log_in(client, office, PASSWORD).status_code == 302 and logged_in(client)


def test_the_owners_own_mistakes_at_home_pause_only_home_for_a_short_while(client, owner):
    assert log_in(client, HOME, PASSWORD).status_code == 302
    client.post(reverse("logout"))
    for _ in range(5):
        response = log_in(client, HOME, "typo")
    assert response.status_code == 429
    assert "paused for 5 minutes" in response.content.decode()
    assert log_in(client, HOME, PASSWORD).status_code == 429
    # Nobody else is held up by them.
    User.objects.create_user(username="bob", email="bob@example.com", password=PASSWORD)
    assert log_in(client, HOME, PASSWORD, email="bob@example.com").status_code == 302


def test_a_reset_link_lets_the_owner_in_during_a_cool_off(client, owner):
    for n in range(10):  # the account's limit, and the attacker's address's with others
        log_in(client, ATTACKER, "guess", email="ada@example.com" if n < 5 else f"x{n}@a.example")
    assert log_in(client, ELSEWHERE, PASSWORD).status_code == 429

    link = reset_link(client, ELSEWHERE)
    form_url = client.get(link, REMOTE_ADDR=ELSEWHERE).url
    response = client.post(
        form_url,
        {"new_password1": "a new long secret 42", "new_password2": "a new long secret 42"},
        REMOTE_ADDR=ELSEWHERE,
    )
    assert response.status_code == 302
    assert logged_in(client)  # the link logs its owner in at once
    assert "You are logged in." in client.get(response.url).content.decode()
    client.post(reverse("logout"))

    # The account's cool-off is over, and the address is now one the owner logged in from.
    assert LoginAddress.objects.filter(user=owner, address=ELSEWHERE).exists()
    assert log_in(client, ELSEWHERE, "a new long secret 42").status_code == 302
    # The attacker's address stays paused.
    client.post(reverse("logout"))
    assert log_in(client, ATTACKER, "a new long secret 42").status_code == 429


def test_a_success_clears_only_the_accounts_failures_from_that_address(client, owner):
    """Logging in to an account of one's own does not reset one's address's count."""
    User.objects.create_user(username="mal", email="mal@example.com", password=PASSWORD)
    for n in range(9):
        log_in(client, ATTACKER, "guess", email=f"victim{n}@example.com")
        if n == 4:
            assert log_in(client, ATTACKER, PASSWORD, email="mal@example.com").status_code == 302
            client.post(reverse("logout"))
    response = log_in(client, ATTACKER, "guess", email="victim9@example.com")
    assert response.status_code == 429


def test_the_cool_off_doubles_with_each_new_series_of_failures(client, owner, monkeypatch):
    rule = throttle.Rule(
        "login-fast",
        limit=2,
        window=timedelta(minutes=5),
        cooloff=timedelta(milliseconds=400),
        max_cooloff=timedelta(milliseconds=1500),
    )
    monkeypatch.setattr(throttle, "LOGIN_ACCOUNT", rule)
    monkeypatch.setattr(throttle, "LOGIN_ADDRESS", rule)
    lengths = []
    for _ in range(4):
        assert log_in(client, ATTACKER, "guess").status_code == 200
        started = timezone.now()
        response = log_in(client, ATTACKER, "guess")
        assert response.status_code == 429
        length = response.wsgi_request.sipcloud_login_refused_until - started
        lengths.append(round(length.total_seconds(), 1))
        assert log_in(client, ATTACKER, PASSWORD).status_code == 429  # refused meanwhile
        time.sleep(length.total_seconds() + 0.05)
    assert lengths == [0.4, 0.8, 1.5, 1.5]
    # Every cool-off ends.
    assert log_in(client, ATTACKER, PASSWORD).status_code == 302


def test_cool_offs_grow_twofold_up_to_their_cap(settings):
    rule = throttle.Rule(
        "unit",
        limit=1,
        window=timedelta(minutes=5),
        cooloff=timedelta(seconds=10),
        max_cooloff=timedelta(seconds=35),
    )
    limit = throttle.Limit(rule, "key")
    lengths = []
    for _ in range(4):
        until = throttle.count([limit])
        lengths.append(round((until - timezone.now()).total_seconds()))
        assert throttle.refused_until([limit]) is not None
        assert throttle.count([limit]) is None  # not counted during the cool-off
        throttle.forget([limit])  # as if it had run out; the strikes stay
    assert lengths == [10, 20, 35, 35]


def test_signup_is_limited_per_address(client, host):
    for n in range(10):
        response = client.post(
            reverse("tenants:signup"),
            {"email": f"not an address {n}", "password": "x", "company_name": "Acme"},
            REMOTE_ADDR=ATTACKER,
        )
        assert response.status_code == 200
    response = client.post(
        reverse("tenants:signup"),
        {
            "email": "late@example.com",
            "password": "a long enough password 1",
            "company_name": "Late Ltd",
            "accept_terms": "on",
        },
        REMOTE_ADDR=ATTACKER,
    )
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many sign-ups from your address. Please try again in 15 minutes." in page
    assert 'value="late@example.com"' in page  # what was typed is kept
    assert not User.objects.filter(email="late@example.com").exists()

    response = client.post(
        reverse("tenants:signup"),
        {
            "email": "late@example.com",
            "password": "a long enough password 1",
            "company_name": "Late Ltd",
            "accept_terms": "on",
        },
        REMOTE_ADDR=ELSEWHERE,
    )
    assert response.status_code == 200
    assert User.objects.filter(email="late@example.com").exists()


def test_reset_requests_are_limited_per_email_and_the_links_sent_still_work(client, owner):
    link = reset_link(client, ATTACKER)
    for _ in range(2):
        reset_link(client, ATTACKER)
    mail.outbox.clear()
    response = client.post(
        reverse("password_reset"), {"email": "ada@example.com"}, REMOTE_ADDR=ELSEWHERE
    )
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many password reset requests" in page
    assert "A reset link we have already e-mailed you still works." in page
    assert not mail.outbox  # the mailbox is not flooded

    form_url = client.get(link, REMOTE_ADDR=ELSEWHERE).url
    response = client.post(
        form_url,
        {"new_password1": "a new long secret 42", "new_password2": "a new long secret 42"},
        REMOTE_ADDR=ELSEWHERE,
    )
    assert response.status_code == 302 and logged_in(client)


def test_reset_requests_are_limited_per_address(client, db):
    for n in range(10):
        response = client.post(
            reverse("password_reset"), {"email": f"who{n}@example.com"}, REMOTE_ADDR=ATTACKER
        )
        assert response.status_code == 302
    response = client.post(
        reverse("password_reset"), {"email": "who@example.com"}, REMOTE_ADDR=ATTACKER
    )
    assert response.status_code == 429


def test_the_refusal_is_in_the_readers_language(client, owner):
    for _ in range(5):
        response = log_in(client, ATTACKER, "guess", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429
    assert "登录失败次数过多" in response.content.decode()


def test_without_redis_the_forms_stay_open(client, owner, settings, caplog):
    settings.SIPCLOUD_THROTTLE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    for _ in range(6):
        assert log_in(client, ATTACKER, "guess").status_code == 200
    assert log_in(client, ATTACKER, PASSWORD).status_code == 302
    assert "Redis unavailable" in caplog.text


@pytest.mark.parametrize(
    ("remote", "counted"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("", None),
    ],
)
def test_an_ipv6_client_counts_as_its_64(rf, remote, counted):
    assert throttle.client_address(rf.get("/", REMOTE_ADDR=remote)) == counted
