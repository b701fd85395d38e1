"""Two phones, each behind its own NAT router, call each other through a worker.

The topology is in nat_lab.py: each phone (SIPp for signalling, an RTP socket
for media) lives in a LAN namespace behind a masquerading router namespace; the
worker runs in the root namespace on the "wan". The phones' SDP shows their
private addresses, which nothing outside their LAN can reach. With the media
relay on, both hear each other through the server's ports; with it off, the
SDP reaches the other phone untouched and its audio goes nowhere.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import missing, require_tool

from .media_peers import RtpPeer, free_block, rtp_packet, sdp_seen
from .nat_lab import LanSipp, NatLab, in_netns

pytestmark = pytest.mark.e2e

PACKETS = 100  # each phone sends this many, one per TICK
TICK = 0.002  # seconds each phone listens between two packets it sends
LATE = 1.0  # seconds to wait for packets still in flight after the last one sent
CALL_MS = 4000  # how long the caller keeps the call up: the exchange takes under 2 s


@pytest.fixture
def nat_lab() -> Iterator[NatLab]:
    if os.geteuid() != 0:
        missing("network namespaces need root")
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    require_tool("sipp", "sip-tester")
    lab = NatLab()
    try:
        yield lab.create()
    finally:
        lab.destroy()


@dataclass
class Call:
    to_callee: tuple[str, int]  # where the caller's SDP answer told it to send
    to_caller: tuple[str, int]  # where the callee's SDP offer told it to send
    caller: RtpPeer
    callee: RtpPeer
    block: tuple[int, int]


def talk(peers: list[tuple[RtpPeer, tuple[str, int]]]) -> None:
    """Each phone sends PACKETS to where its SDP said, listening TICK between packets,
    then listens until it has PACKETS or LATE seconds have passed."""
    for _ in range(PACKETS):
        for peer, dest in peers:
            peer.seq += 1
            with contextlib.suppress(OSError):  # as on the wire: a packet with no route is lost
                peer.sock.sendto(rtp_packet(peer.seq, peer.ssrc), dest)
        for peer, _ in peers:
            peer.collect(len(peer.received) + PACKETS, timeout=TICK)
    deadline = time.monotonic() + LATE
    for peer, _ in peers:
        peer.collect(PACKETS, timeout=max(0.0, deadline - time.monotonic()))


@pytest.fixture
def call_across_nats(nat_lab: NatLab, start_worker, tmp_path: Path) -> Iterator:
    """Callee 101 in lan2 registers; caller 100 in lan1 calls it; both send RTP."""
    phones = LanSipp(tmp_path)
    peers: list[RtpPeer] = []

    def run(relay: bool) -> Call:
        block = free_block()
        worker = start_worker(
            public_address=nat_lab.server,
            system={"media_relay": relay},
            listen={"address": "0.0.0.0", "media_ports": list(block)},
        )
        server = f"{nat_lab.server}:{worker.port}"
        caller_lan, callee_lan = nat_lab.lans
        with in_netns(caller_lan.namespace):
            caller = RtpPeer(caller_lan.phone)
        with in_netns(callee_lan.namespace):
            callee = RtpPeer(callee_lan.phone)
        peers.extend((caller, callee))

        phones.register(callee_lan, server, "101")
        uas, uas_log = phones.start(
            callee_lan, "uas_audio_logged.xml", None, None, ["-key", "aport", str(callee.port)]
        )
        uac, uac_log = phones.start(
            caller_lan,
            "uac_audio_logged.xml",
            server,
            "100",
            ["-s", "101", "-key", "aport", str(caller.port), "-d", str(CALL_MS)],
        )
        host, port, _ = sdp_seen(uac_log.with_suffix(".log"), "answered")
        to_callee = (host, port)
        host, port, _ = sdp_seen(uas_log.with_suffix(".log"), "offered")
        to_caller = (host, port)
        talk([(caller, to_callee), (callee, to_caller)])
        call = Call(to_callee, to_caller, caller, callee, block)
        # the phones' own SDP showed their private addresses, as phones behind NAT do
        for lan, log in ((caller_lan, uac_log), (callee_lan, uas_log)):
            assert f"c=IN IP4 {lan.phone}" in log.with_suffix(".msg").read_text(errors="replace")
        # signalling crosses the NATs either way: the call is set up and ends normally
        for proc, log in ((uac, uac_log), (uas, uas_log)):
            assert proc.wait(CALL_MS / 1000 + 10) == 0, phones.output(log)
        return call

    try:
        yield run
    finally:
        phones.stop_all()
        for peer in peers:
            peer.close()


def test_phones_behind_nat_hear_each_other_through_the_relay(call_across_nats, nat_lab):
    call = call_across_nats(relay=True)
    for host, port in (call.to_callee, call.to_caller):
        assert host == nat_lab.server and call.block[0] <= port <= call.block[1]
    # A phone's first packet may reach the relay before the other phone's has latched it
    # (until then the relay sends to the private address in the SDP, which has no route).
    for peer in (call.caller, call.callee):
        assert len(peer.received) >= PACKETS - 2, f"heard {len(peer.received)} of {PACKETS}"
        assert {source[0] for _, source in peer.received} == {nat_lab.server}
        assert all(call.block[0] <= source[1] <= call.block[1] for _, source in peer.received)


def test_without_the_relay_phones_behind_nat_hear_nothing(call_across_nats, nat_lab):
    """What the relay prevents: each phone is told the other's private address.

    Both phones are behind NAT here, so neither direction arrives (no audio); with one
    phone on a public address, the other direction would (one-way audio).
    """
    call = call_across_nats(relay=False)
    caller_lan, callee_lan = nat_lab.lans
    assert call.to_callee[0] == callee_lan.phone and call.to_caller[0] == caller_lan.phone
    heard = [len(peer.received) for peer in (call.caller, call.callee)]
    assert heard == [0, 0], f"packets heard by caller, callee: {heard}"
