"""End to end: an application server's call-back through a real worker, callees played by SIPp.

The AS is a UDP socket of the test: it sends REQUEST (and CANCEL), reads the ACK at once
and the RESPONSE when the call-back ends. callee1 and callee2 are SIPp UASs registered
as 101 and 102. Each test reads the CDR the call-back wrote.
"""

from __future__ import annotations

import socket
import time

import pytest

from sipnodes.engine.callback import encode, parse

from .processes import wait_events

pytestmark = pytest.mark.e2e

PW = {"101": "pw101", "102": "pw102"}


class ApplicationServer:
    """The test's AS: one UDP socket talking to the worker's call-back port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, method: str, **fields: str) -> None:
        self.sock.sendto(encode(method, fields.items()), ("127.0.0.1", self.port))

    def receive(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        message = parse(self.sock.recv(4096))
        return {"method": message.method, **message.fields}

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def as_and_worker(callback_worker):
    worker = callback_worker(default_caller="900")
    app = ApplicationServer(worker.callback_port)
    yield app, worker
    app.close()


def one_cdr(redis_client, worker):
    [cdr] = [e["data"] for e in wait_events(redis_client, worker.server_id, "cdr", 1, 10)]
    return cdr


def test_a_call_back_calls_callee1_then_callee2_and_bridges_them(as_and_worker, sipp, redis_client):
    app, worker = as_and_worker
    first = sipp.start_uas(
        "uas_callback_first.xml", sipp.register(worker.port, [("101", PW["101"])])
    )
    second = sipp.start_uas("uas_bye.xml", sipp.register(worker.port, [("102", PW["102"])]))
    app.send("REQUEST", callid="e2e-1", callee1="101", callee2="102")
    assert app.receive(2) == {"method": "ACK", "callid": "e2e-1", "result": "0"}
    response = app.receive(15)  # callee2 hangs up: the bridge ends
    assert sipp.wait(first) == 0, sipp.output(first)  # held, re-pointed at callee2, BYE
    assert sipp.wait(second) == 0, sipp.output(second)
    assert (response["method"], response["callid"]) == ("RESPONSE", "e2e-1")
    assert (response["result"], response["cause"]) == ("0", "16")
    assert 0 < float(response["duration"]) < 5
    assert float(response["answer1"]) <= float(response["answer2"])
    cdr = one_cdr(redis_client, worker)
    assert (cdr["caller"], cdr["callee"], cdr["answered"]) == ("101", "102", True)
    assert cdr["fci"] == "callTag=2;cause=16;callback=e2e-1"  # callee2's BYE ended it


def test_a_busy_callee1_ends_the_call_back_before_callee2_is_called(
    as_and_worker, sipp, redis_client
):
    app, worker = as_and_worker
    first = sipp.start_uas("uas_busy.xml", sipp.register(worker.port, [("101", PW["101"])]))
    second = sipp.start_uas("uas_answer.xml", sipp.register(worker.port, [("102", PW["102"])]))
    app.send("REQUEST", callid="e2e-2", callee1="101", callee2="102")
    assert app.receive(2)["result"] == "0"
    response = app.receive(10)
    assert (response["result"], response["cause"], response["answer1"]) == ("20", "17", "")
    assert sipp.wait(first) == 0, sipp.output(first)
    time.sleep(0.5)  # what callee2 would have got by now, had it been called
    assert second.poll() is None, "callee2 was called"
    second.kill()
    assert one_cdr(redis_client, worker)["fci"] == "callTag=17;cause=17;callback=e2e-2"


def test_the_as_cancels_while_callee1_rings(as_and_worker, sipp, redis_client):
    app, worker = as_and_worker
    first = sipp.start_uas(
        "uas_ring_cancelled.xml", sipp.register(worker.port, [("101", PW["101"])])
    )
    app.send("REQUEST", callid="e2e-3", callee1="101", callee2="102")
    assert app.receive(2)["result"] == "0"
    time.sleep(0.5)  # callee1 rings
    app.send("CANCEL", callid="e2e-3")
    replies = [app.receive(5), app.receive(5)]
    ack, response = sorted(replies, key=lambda m: m["method"])
    assert (ack["method"], ack["result"]) == ("ACK", "0")
    assert (response["method"], response["result"], response["duration"]) == (
        "RESPONSE",
        "22",
        "0.000",
    )
    assert sipp.wait(first) == 0, sipp.output(first)  # CANCEL, 487, ACK
    assert one_cdr(redis_client, worker)["fci"] == "callTag=8;cause=16;callback=e2e-3"
