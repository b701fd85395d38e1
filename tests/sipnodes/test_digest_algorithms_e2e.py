"""The digest algorithms chosen in the portal reach the running worker by a reload: real
supervisord, node agent and worker."""

import socket
import time

import pytest
from django.urls import reverse

from sipnodes.engine.digest import digest_parameters
from sipnodes.engine.message import Response, parse
from sipnodes.models import VirtualServer
from tests.support import wait_until

from .test_provisioning_e2e import register, signup

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def offered(server: VirtualServer) -> list[str]:
    """The algorithms of the worker's challenges to an unauthenticated REGISTER of 100."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.bind(("127.0.0.1", 0))
        lport = sock.getsockname()[1]
        sock.sendto(
            (
                f"REGISTER sip:{server.realm} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{time.time_ns()};rport\r\n"
                f"From: <sip:100@{server.realm}>;tag=alg\r\nTo: <sip:100@{server.realm}>\r\n"
                f"Call-ID: alg-{time.time_ns()}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:100@127.0.0.1:{lport}>\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", server.sip_port),
        )
        try:
            response = parse(sock.recvfrom(65535)[0])
        except TimeoutError:
            return []
    assert isinstance(response, Response) and response.code == 401
    challenges = [digest_parameters(v) for v in response.headers.getlist("WWW-Authenticate")]
    return [c["algorithm"] for c in challenges if c is not None]


def test_sha256_only_set_in_the_portal_reaches_the_worker_without_a_restart(
    client, node_host, sipp
):
    server, passwords = signup(client)
    assert wait_until(lambda: register(sipp, server, "100", passwords["100"]), 30, 0.1)
    assert offered(server) == ["MD5"]  # the default
    pid = node_host.worker_pid(server.pk)

    response = client.post(
        reverse("tenants:server-settings", args=[server.pk]),
        {
            "name": server.name,
            "out_group_prefix": server.out_group_prefix,
            "prompt_language": server.prompt_language,
            "media_relay": "on",
            "cdr_failed_calls": "on",
            "cdr_realtime_display": "on",
            "digest_algorithms": VirtualServer.DigestAlgorithms.SHA256,
        },
    )
    assert response.status_code == 302
    applied = wait_until(lambda: offered(server) == ["SHA-256"], 15, 0.1)
    assert applied, node_host.agent_log()[-3000:]
    assert node_host.worker_pid(server.pk) == pid  # SIGHUP, not a restart
    assert not register(sipp, server, "101", passwords["101"])  # SIPp answers MD5 only
