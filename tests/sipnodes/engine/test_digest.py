import pytest

from sipnodes.engine.digest import NONCE_LIFETIME, Authenticator, Outcome, response_digest

from .helpers import REALM, make_config

URI = f"sip:{REALM}"


def creds(auth, now, user="100", password="pw100", algorithm="MD5", qop=True, nonce=None):
    import hashlib

    h = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    ha1 = h(f"{user}:{REALM}:{password}".encode()).hexdigest()
    nonce = nonce or auth.nonce(now)
    params = {"qop": "auth", "nc": "00000001", "cnonce": "xyz"} if qop else {}
    resp = response_digest(algorithm, ha1, nonce, "REGISTER", URI, params)
    extra = ', qop=auth, nc=00000001, cnonce="xyz"' if qop else ""
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        f'response="{resp}", algorithm={algorithm}{extra}'
    )


@pytest.fixture
def auth():
    return Authenticator(REALM, make_config().users_by_number, secret=b"k" * 16)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("qop", [True, False])
def test_good_credentials_from_ha1_only(auth, algorithm, qop):
    result = auth.check(creds(auth, 100.0, algorithm=algorithm, qop=qop), "REGISTER", 101.0)
    assert result.outcome is Outcome.OK and result.user.number == "100"


def test_unknown_user_and_wrong_password_get_the_same_outcome(auth):
    wrong = auth.check(creds(auth, 100.0, password="nope"), "REGISTER", 100.0)
    unknown = auth.check(creds(auth, 100.0, user="999"), "REGISTER", 100.0)
    # The same outcome and no user either way; only the name given differs (the guard
    # counts failures per name tried), and nothing of it reaches the phone.
    assert (wrong.outcome, wrong.user) == (unknown.outcome, unknown.user)
    assert wrong.outcome is Outcome.FORBIDDEN and wrong.user is None
    assert (wrong.username, unknown.username) == ("100", "999")


def test_missing_foreign_or_expired_nonce(auth):
    assert auth.check(None, "REGISTER", 0).outcome is Outcome.CHALLENGE
    assert auth.check("Basic abc", "REGISTER", 0).outcome is Outcome.CHALLENGE
    other = Authenticator(REALM, auth.users, secret=b"o" * 16)
    assert auth.check(creds(other, 100.0), "REGISTER", 100.0).outcome is Outcome.CHALLENGE
    old = creds(auth, 100.0)
    assert auth.check(old, "REGISTER", 100.0 + NONCE_LIFETIME + 1).outcome is Outcome.STALE


def test_method_is_part_of_the_digest(auth):
    assert auth.check(creds(auth, 1.0), "INVITE", 1.0).outcome is Outcome.FORBIDDEN


def test_challenges_list_md5_first_then_sha256(auth):
    values = auth.challenges(5.0, stale=True)
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["MD5", "SHA-256"]
    assert all(f'realm="{REALM}"' in v and "stale=true" in v for v in values)


def test_one_nonce_per_second_and_a_forged_one_still_fails(auth):
    """Challenges within a second share a nonce (one HMAC); the check stays exact."""
    first = auth.nonce(7.2)
    assert auth.nonce(7.9) == first and auth.nonce(8.0) != first
    assert auth.check(creds(auth, 7.2), "REGISTER", 7.5).outcome is Outcome.OK
    forged = first[:-1] + ("0" if first[-1] != "0" else "1")
    assert auth.check(creds(auth, 7.2, nonce=forged), "REGISTER", 7.5).outcome is Outcome.CHALLENGE
    assert auth.check(creds(auth, 7.2, nonce=first), "REGISTER", 7.5).outcome is Outcome.OK
