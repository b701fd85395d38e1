"""A live worker challenges with the configured digest algorithms only, and a SIGHUP
changes them; real clients behave as the portal's help text says."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from sipnodes.engine.digest import digest_parameters, response_digest
from sipnodes.engine.message import Response, parse
from tests.support import wait_until

from .helpers import REALM, ha1
from .processes import event_states, wait_events

pytestmark = pytest.mark.e2e

URI = f"sip:{REALM}"


class UdpPhone:
    """User 100 on a UDP socket, registering by hand so each challenge can be read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.sock.bind(("127.0.0.1", 0))
        self.lport = self.sock.getsockname()[1]
        self.cseq = 0

    def register(self, authorization: str = "") -> Response:
        self.cseq += 1
        msg = (
            f"REGISTER {URI} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch=z9hG4bK{time.time_ns()};rport\r\n"
            f"From: <sip:100@{REALM}>;tag=alg\r\nTo: <sip:100@{REALM}>\r\n"
            f"Call-ID: alg-{self.lport}\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:100@127.0.0.1:{self.lport}>\r\nExpires: 600\r\n"
            f"{authorization}Content-Length: 0\r\n\r\n"
        )
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.port))
        response = parse(self.sock.recvfrom(65535)[0])
        assert isinstance(response, Response)
        return response

    def challenges(self) -> list[dict[str, str]]:
        response = self.register()
        assert response.code == 401
        found = [digest_parameters(v) for v in response.headers.getlist("WWW-Authenticate")]
        return [p for p in found if p is not None]

    def answer(self, challenge: dict[str, str], algorithm: str) -> Response:
        """Answer `challenge`'s nonce with the right password, by `algorithm`."""
        params = {"qop": "auth", "nc": "00000001", "cnonce": "c0ffee"}
        nonce = challenge["nonce"]
        digest = response_digest(
            algorithm, ha1("100", "pw100", algorithm), nonce, "REGISTER", URI, params
        )
        return self.register(
            f'Authorization: Digest username="100", realm="{REALM}", nonce="{nonce}", '
            f'uri="{URI}", response="{digest}", algorithm={algorithm}, qop=auth, '
            f'nc=00000001, cnonce="c0ffee"\r\n'
        )

    def close(self) -> None:
        self.sock.close()


def test_sha256_only_challenges_and_accepts_sha256_only_until_a_reload(start_worker, redis_client):
    worker = start_worker(auth={"algorithms": ["SHA-256"]})
    phone = UdpPhone(worker.port)
    try:
        [challenge] = phone.challenges()
        assert challenge["algorithm"] == "SHA-256"
        assert phone.answer(challenge, "MD5").code == 401  # right password, refused
        assert phone.answer(challenge, "SHA-256").code == 200

        # The portal sets MD5 only: the agent rewrites the file and sends SIGHUP.
        worker.write_config(auth={"algorithms": ["MD5"]})
        worker.signal(signal.SIGHUP)
        assert wait_until(
            lambda: "reloaded" in event_states(redis_client, worker.server_id, "status"), 5.0
        )
        [challenge] = phone.challenges()
        assert challenge["algorithm"] == "MD5"
        assert phone.answer(challenge, "SHA-256").code == 401
        assert phone.answer(challenge, "MD5").code == 200
    finally:
        phone.close()
    assert worker.proc.poll() is None  # the same process throughout: no restart
    # Both REGISTERs were accepted; the second renewed the same binding, which is no
    # event of its own (docs/events.md: a refresh that changes nothing).
    registrations = wait_events(redis_client, worker.server_id, "registration", count=1)
    assert [(r["data"]["user"], r["data"]["action"]) for r in registrations] == [
        ("100", "register"),
    ]


@pytest.mark.parametrize(
    ("algorithms", "registers"),
    [(["MD5"], True), (["SHA-256", "MD5"], False), (["SHA-256"], False)],
)
def test_sipp_registers_only_when_md5_comes_first(start_worker, sipp, algorithms, registers):
    """SIPp answers the first challenge only, and only with MD5 (the portal's help text)."""
    worker = start_worker(auth={"algorithms": algorithms})
    rc, out = sipp.run("register.xml", worker.port, [("100", "pw100")])
    assert (rc == 0) is registers, out[-2000:]
