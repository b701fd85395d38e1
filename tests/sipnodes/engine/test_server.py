"""The asyncio shell with a real worker process: TCP framing, SIGHUP, restart."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from sipnodes.engine.digest import digest_parameters, response_digest
from sipnodes.engine.location import location_key
from sipnodes.engine.message import Response, parse
from tests.support import options_ping, wait_read_by_peer, wait_until

from .helpers import REALM, ha1
from .processes import event_states, stream_events, wait_events

pytestmark = pytest.mark.e2e


def options(port: int, transport: str, lport: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{lport};branch=z9hG4bK{time.time_ns()}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {time.time_ns()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"SIP/2.0 200 OK") < count and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65535)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def test_tcp_split_and_joined_messages(start_worker):
    worker = start_worker()
    with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as sock:
        lport = sock.getsockname()[1]
        one = options(worker.port, "TCP", lport)
        sock.sendall(one[:17])
        wait_read_by_peer(sock)  # the worker holds a part of a message, then gets the rest
        sock.sendall(one[17:])
        assert read_responses(sock, 1).count(b"SIP/2.0 200 OK") == 1
        sock.sendall(options(worker.port, "TCP", lport) + options(worker.port, "TCP", lport))
        assert read_responses(sock, 2).count(b"SIP/2.0 200 OK") == 2


def test_register_over_tcp(start_worker, sipp, redis_client):
    worker = start_worker()
    sipp.register(worker.port, [("100", "pw100")], extra=["-t", "t1"])
    [reg] = wait_events(redis_client, worker.server_id, "registration")
    assert reg["data"]["action"] == "register"


def test_sighup_reloads_without_dropping_registrations(start_worker, sipp, redis_client):
    worker = start_worker()
    sipp.register(worker.port, [("100", "pw100")])
    # A bad file is refused and the running config kept.
    worker.config_path.write_text("{broken")
    worker.signal(signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in worker.log(), 5.0)
    assert "config error" in worker.log()
    assert options_ping(worker.port)
    # A good file: user 106 removed, limit raised; 100 stays registered.
    users = [u for u in worker.data["users"] if u["number"] != "106"]
    worker.write_config(users=users, max_clients=7)
    worker.signal(signal.SIGHUP)
    assert wait_until(
        lambda: "reloaded" in event_states(redis_client, worker.server_id, "status"), 5.0
    ), worker.log()
    rc, out = sipp.run("register_refused.xml", worker.port, [("106", "pw106")])
    assert rc == 0 and "final: SIP/2.0 403 Forbidden" in out
    [reloaded] = [
        e
        for e in stream_events(redis_client, worker.server_id, "status")
        if e["data"]["state"] == "reloaded"
    ]
    assert reloaded["data"]["registered_clients"] == 1  # 100 is still registered
    assert len(redis_client.hgetall(location_key(worker.server_uid))) == 1
    regs = stream_events(redis_client, worker.server_id, "registration")
    assert [r["data"]["action"] for r in regs] == ["register"]
    assert worker.proc.poll() is None


def test_restart_restores_registrations(start_worker, sipp, redis_client):
    worker = start_worker()
    sipp.register(worker.port, [("100", "pw100"), ("101", "pw101")])
    assert worker.stop() == 0
    worker.start()
    assert wait_until(lambda: "restored registrations of 2 clients" in worker.log(), 5.0), (
        worker.log()
    )


@pytest.mark.parametrize("caller_transport", ["u1", "t1"])
def test_call_to_a_callee_registered_over_tcp(start_worker, sipp, redis_client, caller_transport):
    worker = start_worker()
    uas_port = sipp.register(worker.port, [("101", "pw101")], extra=["-t", "t1"])
    # The registering connection is gone: the worker connects to the Contact address.
    uas = sipp.start_uas("uas_answer.xml", uas_port, extra=["-t", "t1"])
    rc, out = sipp.run(
        "uac_call.xml", worker.port, [("100", "pw100")], extra=["-s", "101", "-t", caller_transport]
    )
    assert rc == 0, out
    assert sipp.wait(uas) == 0
    [cdr] = [e["data"] for e in wait_events(redis_client, worker.server_id, "cdr")]
    assert cdr["fci"] == "callTag=1;cause=16" and cdr["answered"] is True


def test_sha256_digest_on_a_live_worker(start_worker, redis_client):
    worker = start_worker(auth={"algorithms": ["SHA-256", "MD5"]})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.bind(("127.0.0.1", 0))
    lport = sock.getsockname()[1]

    def register(cseq: int, authorization: str = "") -> Response:
        msg = (
            f"REGISTER sip:{REALM} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{cseq}x{lport};rport\r\n"
            f"From: <sip:100@{REALM}>;tag=sha\r\nTo: <sip:100@{REALM}>\r\n"
            f"Call-ID: sha256-{lport}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:100@127.0.0.1:{lport}>\r\nExpires: 600\r\n"
            f"{authorization}Content-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), ("127.0.0.1", worker.port))
        return parse(sock.recvfrom(65535)[0])

    try:
        challenge = register(1)
        assert challenge.code == 401
        first = digest_parameters(challenge.headers.getlist("WWW-Authenticate")[0])
        assert first is not None and first["algorithm"] == "SHA-256"
        nonce = first["nonce"]
        params = {"qop": "auth", "nc": "00000001", "cnonce": "c0ffee"}
        uri = f"sip:{REALM}"
        digest = response_digest(
            "SHA-256", ha1("100", "pw100", "SHA-256"), nonce, "REGISTER", uri, params
        )
        ok = register(
            2,
            f'Authorization: Digest username="100", realm="{REALM}", nonce="{nonce}", '
            f'uri="{uri}", response="{digest}", algorithm=SHA-256, qop=auth, '
            f'nc=00000001, cnonce="c0ffee"\r\n',
        )
        assert ok.code == 200
    finally:
        sock.close()
    [reg] = wait_events(redis_client, worker.server_id, "registration")
    assert reg["data"]["user"] == "100"
