"""The algorithms a server offers are the only ones it accepts (`auth.algorithms`).

A tenant who picks "SHA-256 only" in the portal expects MD5 to be off: an MD5 answer
with the right password gets a fresh challenge, never a registration.
"""

import pytest

from sipnodes.engine.digest import (
    Authenticator,
    AuthResult,
    Outcome,
    digest_parameters,
    response_digest,
)
from sipnodes.engine.message import Response

from .helpers import REALM, T0, Pbx, ha1, make_config

URI = f"sip:{REALM}"


def answer(auth: Authenticator, algorithm: str | None, now: float = T0) -> str:
    """User 100's right answer to a challenge, with `algorithm` (None: the parameter left
    out, which means MD5 in RFC 2617)."""
    nonce = auth.nonce(now)
    params = {"qop": "auth", "nc": "00000001", "cnonce": "c0ffee"}
    used = (algorithm or "MD5").upper()
    response = response_digest(used, ha1("100", "pw100", used), nonce, "REGISTER", URI, params)
    named = f", algorithm={algorithm}" if algorithm else ""
    return (
        f'Digest username="100", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}"{named}, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


def authenticator(*algorithms: str) -> Authenticator:
    config = make_config(auth={"algorithms": list(algorithms)})
    return Authenticator(REALM, config.users_by_number, b"k" * 16, config.auth.algorithms)


def offered(auth: Authenticator) -> list[str]:
    return [digest_parameters(c)["algorithm"] for c in auth.challenges(T0)]  # type: ignore[index]


def test_md5_only_offers_only_md5_and_takes_no_sha256_answer():
    auth = authenticator("MD5")
    assert offered(auth) == ["MD5"]
    assert auth.check(answer(auth, "MD5"), "REGISTER", T0).outcome is Outcome.OK
    assert auth.check(answer(auth, None), "REGISTER", T0).outcome is Outcome.OK
    assert auth.check(answer(auth, "SHA-256"), "REGISTER", T0).outcome is Outcome.CHALLENGE


def test_sha256_only_refuses_a_right_md5_answer_with_a_fresh_challenge():
    auth = authenticator("SHA-256")
    assert offered(auth) == ["SHA-256"]
    assert auth.check(answer(auth, "SHA-256"), "REGISTER", T0).outcome is Outcome.OK
    for md5 in (answer(auth, "MD5"), answer(auth, None), answer(auth, "md5")):
        assert auth.check(md5, "REGISTER", T0) == AuthResult(Outcome.CHALLENGE)


def test_sha256_and_md5_offers_sha256_first_and_takes_both():
    auth = authenticator("SHA-256", "MD5")
    assert offered(auth) == ["SHA-256", "MD5"]
    for algorithm in ("SHA-256", "MD5"):
        assert auth.check(answer(auth, algorithm), "REGISTER", T0).outcome is Outcome.OK


def test_a_config_without_algorithms_still_offers_and_takes_both():
    """Files rendered before the setting existed carry no `auth`: nothing changes for them."""
    config = make_config()
    auth = Authenticator(REALM, config.users_by_number, b"k" * 16, config.auth.algorithms)
    assert offered(auth) == ["MD5", "SHA-256"]
    for algorithm in ("MD5", "SHA-256"):
        assert auth.check(answer(auth, algorithm), "REGISTER", T0).outcome is Outcome.OK


@pytest.mark.parametrize(
    ("algorithms", "md5_code", "sha256_code"),
    [(["MD5"], 200, 401), (["SHA-256"], 401, 200), (["SHA-256", "MD5"], 200, 200)],
)
def test_the_registrar_answers_by_the_configured_algorithms(algorithms, md5_code, sha256_code):
    pbx = Pbx(auth={"algorithms": algorithms})
    phone = pbx.phone("100", 6000)
    first = _register(phone, "")
    assert first.code == 401
    challenges = first.headers.getlist("WWW-Authenticate")
    assert [digest_parameters(c)["algorithm"] for c in challenges] == algorithms  # type: ignore[index]
    for algorithm, code in (("MD5", md5_code), ("SHA-256", sha256_code)):
        forged = challenges[0].replace(f"algorithm={algorithms[0]}", f"algorithm={algorithm}")
        assert _register(phone, forged).code == code, algorithm


def test_a_reload_changes_the_algorithms_without_a_restart():
    pbx = Pbx(auth={"algorithms": ["MD5"]})
    phone = pbx.phone("100", 6000)
    assert phone.register(T0).code == 200
    pbx.engine.reload(make_config(auth={"algorithms": ["SHA-256"]}), T0 + 1)
    challenges = _register(phone, "", now=T0 + 1).headers.getlist("WWW-Authenticate")
    assert [digest_parameters(c)["algorithm"] for c in challenges] == ["SHA-256"]  # type: ignore[index]
    assert phone.register(T0 + 1, algorithm="SHA-256").code == 200
    assert pbx.engine.location.registered_clients() == 1


def _register(phone, challenge: str, now: float = T0) -> Response:
    """One REGISTER from `phone`, answering `challenge` if given; the response to it."""
    req = phone.request("REGISTER", URI, call_id="reg-100", headers={"Expires": "600"})
    if challenge:
        phone.authorize(req, challenge, "Authorization")
    phone.send(req, now)
    [response] = phone.take()
    assert isinstance(response, Response)
    return response
