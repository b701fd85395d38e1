"""The media relay end to end: a real worker, SIPp for signalling, RTP counted both ways.

SIPp's SDP names media ports the test owns (`-key aport/vport`), and the
scenarios log the address and ports of each SDP they receive, so the test
sends RTP exactly where each phone was told to and counts it at the other end.
"""

from __future__ import annotations

import pytest

from tests.interop.agents import FLOW, Baresip
from tests.support import require_tool, wait_for

from .media_peers import RtpPeer, free_block, sdp_seen
from .processes import stream_events, wait_events

pytestmark = pytest.mark.e2e

PACKETS = 50


def in_block(port: int, block: tuple[int, int]) -> bool:
    return block[0] <= port <= block[1]


def exchange(pairs: list[tuple[RtpPeer, tuple[str, int], RtpPeer]], block: tuple[int, int]):
    """Each sender sends PACKETS to its relay address; each receiver gets all, from the block."""
    targets = {id(r): len(r.received) + PACKETS for _, _, r in pairs}
    for sender, dest, _ in pairs:
        sender.send(PACKETS, dest)
    for _, _, receiver in pairs:
        assert receiver.collect(targets[id(receiver)]) == targets[id(receiver)]
        assert all(
            source[0] == "127.0.0.1" and in_block(source[1], block)
            for _, source in receiver.received
        )


def test_audio_and_video_flow_both_ways_through_the_server_and_survive_hold(
    start_worker, sipp, redis_client
):
    block = free_block()
    worker = start_worker(
        system={"media_relay": True}, listen={"address": "127.0.0.1", "media_ports": list(block)}
    )
    peers = {name: RtpPeer() for name in ("a_audio", "a_video", "b_audio", "b_video")}
    try:
        uas_port = sipp.register(worker.port, [("101", "pw101")])
        keys = lambda side: [  # noqa: E731
            "-key", "aport", str(peers[f"{side}_audio"].port),
            "-key", "vport", str(peers[f"{side}_video"].port),
        ]  # fmt: skip
        uas = sipp.start_uas("uas_av_hold.xml", uas_port, extra=keys("b"))
        uas_log = sipp.tmp / f"sipp{sipp.count}.log"
        uac = sipp.start_uac(
            "uac_av_hold.xml", worker.port, [("100", "pw100")], ["-s", "101", *keys("a")]
        )
        uac_log = sipp.tmp / f"sipp{sipp.count}.log"
        seen: list[tuple[int, ...]] = []
        for label in ("answered", "resumed"):
            host_a, a_audio, a_video = sdp_seen(uac_log, label)  # what the caller was told
            host_b, b_audio, b_video = sdp_seen(
                uas_log, "offered" if label == "answered" else label
            )
            assert host_a == host_b == "127.0.0.1"
            ports = (a_audio, a_video, b_audio, b_video)
            assert all(in_block(p, block) for p in ports) and len(set(ports)) == 4
            seen.append(ports)
            exchange(
                [
                    (peers["a_audio"], (host_a, a_audio), peers["b_audio"]),
                    (peers["a_video"], (host_a, a_video), peers["b_video"]),
                    (peers["b_audio"], (host_b, b_audio), peers["a_audio"]),
                    (peers["b_video"], (host_b, b_video), peers["a_video"]),
                ],
                block,
            )
        assert seen[0] == seen[1]  # hold and back keeps the call's relay ports
        assert sipp.wait(uac) == 0 and sipp.wait(uas) == 0, uac_log.read_text(errors="replace")
    finally:
        for peer in peers.values():
            peer.close()
    [cdr] = [e["data"] for e in wait_events(redis_client, worker.server_id, "cdr")]
    assert cdr["fci"] == "callTag=1;cause=16"


def test_baresip_real_audio_reaches_sipp_through_the_relay_and_back(
    start_worker, sipp, redis_client, tmp_path
):
    """baresip (Debian) sends its real G.711 stream; the SIPp callee's media port answers."""
    require_tool("baresip", "baresip-core")
    block = free_block()
    worker = start_worker(
        auth={"algorithms": ["MD5"]},  # baresip 1.0 gives up on SHA-256 challenges
        system={"media_relay": True},
        listen={"address": "127.0.0.1", "media_ports": list(block)},
    )
    callee = RtpPeer()
    phone = Baresip(tmp_path, "100", "udp", worker.port)
    try:
        uas_port = sipp.register(worker.port, [("101", "pw101")])
        uas = sipp.start_uas(
            "uas_audio_logged.xml", uas_port, extra=["-key", "aport", str(callee.port)]
        )
        uas_log = sipp.tmp / f"sipp{sipp.count}.log"
        phone.start()
        wait_for(
            lambda: registered(redis_client, worker.server_id, "100"), 10, "baresip to register"
        )
        phone.dial("101")
        host, relay_port, _ = sdp_seen(uas_log, "offered")
        assert host == "127.0.0.1" and in_block(relay_port, block)
        assert callee.collect(FLOW, timeout=10) == FLOW  # baresip's own audio, via the block
        assert all(in_block(source[1], block) for _, source in callee.received)
        callee.send(PACKETS, (host, relay_port), gap=0.02)
        phone.hangup()
        wait_for(lambda: phone.totals() is not None, 10, "baresip's RTP summary at hang-up")
        totals = phone.totals()
        assert totals is not None and totals.received >= PACKETS, phone.log()[-2000:]
        assert sipp.wait(uas) == 0
    finally:
        phone.stop()
        callee.close()


def registered(client, server_id: int, user: str) -> bool:
    return any(e["data"]["user"] == user for e in stream_events(client, server_id, "registration"))
