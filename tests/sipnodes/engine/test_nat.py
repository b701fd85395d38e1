"""A phone behind NAT: rport and contact fix-up, through a userspace UDP NAT on loopback.

The NAT rewrites the phone's source port (the worker sees the NAT's port, not
the one in Via), and the phone registers a Contact nobody can reach. Calls to
it must still arrive: the worker answers by `rport` and sends requests to the
address the registration came from.
"""

from __future__ import annotations

import select
import socket
import threading

import pytest

from sipnodes.engine.location import location_key
from tests.support import free_port, wait_until

from .processes import wait_events

pytestmark = pytest.mark.e2e


class UdpNat:
    """One phone's NAT mapping: inside port <-> outside port, both on 127.0.0.1."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(("127.0.0.1", free_port()))
        self.outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.outside.bind(("127.0.0.1", free_port()))
        self.phone: tuple[str, int] | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def inside_port(self) -> int:
        return self.inside.getsockname()[1]

    @property
    def outside_port(self) -> int:
        return self.outside.getsockname()[1]

    def _run(self) -> None:
        while not self.stopping:
            ready, _, _ = select.select([self.inside, self.outside], [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                if sock is self.inside:
                    self.phone = addr
                    self.outside.sendto(data, self.server)
                elif self.phone is not None:  # endpoint-independent mapping
                    self.inside.sendto(data, self.phone)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.inside.close()
        self.outside.close()


@pytest.fixture
def nat_for():
    nats: list[UdpNat] = []

    def make(port: int) -> UdpNat:
        nat = UdpNat(("127.0.0.1", port))
        nats.append(nat)
        return nat

    yield make
    for nat in nats:
        nat.close()


def test_call_reaches_a_phone_behind_nat(start_worker, sipp, redis_client, nat_for):
    worker = start_worker()
    nat = nat_for(worker.port)
    phone_port = sipp.register(nat.inside_port, [("101", "pw101")], scenario="register_nat.xml")
    [reg] = wait_events(redis_client, worker.server_id, "registration")
    assert reg["data"]["contact"] == "sip:101@192.0.2.10:5060"
    loc_key = location_key(worker.server_uid)
    assert wait_until(lambda: redis_client.hlen(loc_key) == 1, 5.0)
    loc = redis_client.hgetall(loc_key)
    [record] = [v.decode() for v in loc.values()]
    assert f'"port": {nat.outside_port}' in record  # the NAT's address, not the Contact
    uas = sipp.start_uas("uas_answer.xml", phone_port)
    rc, out = sipp.run("uac_call.xml", worker.port, [("100", "pw100")], extra=["-s", "101"])
    assert rc == 0, out
    assert sipp.wait(uas) == 0
    [cdr] = [e["data"] for e in wait_events(redis_client, worker.server_id, "cdr")]
    assert cdr["answered"] is True and cdr["fci"] == "callTag=1;cause=16"
