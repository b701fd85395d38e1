"""UPnP end to end: a real host (supervisord, node agent, UPnP agent, workers) behind a
real router (miniupnpd with NAT), phones outside it (upnp_lab.py has the topology).

Both phones sit outside the router: a phone on the office LAN would be told the external
address too, and miniupnpd does not loop LAN traffic back in (no hairpin NAT); see
docs/upnp.md, "Limits".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db.models import F

from sipnodes import services
from sipnodes.credentials import digest_ha1
from sipnodes.models import LocalUser, SipHost, UpnpState, VirtualServer
from tenants.models import Tenant
from tests.factories import make_member
from tests.sipnodes.engine.media_peers import RtpPeer, sdp_seen
from tests.sipnodes.engine.nat_lab import Lan, LanSipp, in_netns
from tests.sipnodes.engine.test_nat_media import PACKETS, talk
from tests.sipnodes.node_host import NodeHost, make_node_host
from tests.sipnodes.upnp_lab import UpnpLab
from tests.support import missing, require_tool, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LEASE = 20  # seconds: renewed every 10 s, so a router reboot is repaired within the test
CALL_MS = 4000


@pytest.fixture
def lab(short_tmp: Path) -> Iterator[UpnpLab]:
    if os.geteuid() != 0:
        missing("network namespaces need root")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("sipp", "sip-tester"),
                          ("miniupnpd", "miniupnpd-nftables"), ("upnpc", "miniupnpc"),
                          ("stund", "stun-server")):  # fmt: skip
        require_tool(tool, package)
    made = UpnpLab(short_tmp)
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture
def office(lab: UpnpLab, short_tmp: Path) -> Iterator[NodeHost]:
    """A SIP host behind the lab's router, its agents started (the router is up to the test)."""
    node_host = make_node_host(short_tmp)
    SipHost.objects.filter(pk=node_host.host.pk).update(
        listen_address=lab.host, public_address=lab.host, behind_router=True
    )
    node_host.host.refresh_from_db()
    node_host.env.update(
        SIPCLOUD_UPNP_POLL="1", SIPCLOUD_UPNP_LEASE=str(LEASE), SIPCLOUD_UPNP_TIMEOUT="2"
    )
    try:
        yield node_host
    finally:
        with contextlib.suppress(Exception):
            node_host.stop()


def upnp_log(node_host: NodeHost) -> str:
    path = node_host.node.directory / "log" / "upnp-agent.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def make_server(name: str, edition: int = 5) -> VirtualServer:
    tenant = Tenant.objects.create(name=name)
    server = services.server_create(tenant=tenant, name=name, edition=edition)
    for number in ("100", "101"):
        user = LocalUser(server=server, number=number)
        user.ha1_md5, user.ha1_sha256 = digest_ha1(number, server.realm, f"pw{number}")
        user.save()
    services.server_update_settings(server=server, upnp=True)
    return VirtualServer.objects.get(pk=server.pk)


def upnp_state(server: VirtualServer) -> str:
    server.refresh_from_db()
    return server.upnp_state


def worker_config(node_host: NodeHost, server: VirtualServer) -> dict:
    path = node_host.node.config_path(server.pk)
    return json.loads(path.read_text()) if path.exists() else {}


def listen_of(node_host: NodeHost, server: VirtualServer) -> dict:
    return worker_config(node_host, server).get("listen", {})


def media_block(server: VirtualServer) -> set[int]:
    return set(range(server.media_port_first, server.media_port_last + 1))


def answers_options(address: str, port: int) -> bool:
    """The worker answers an OPTIONS on the host's LAN address: it keeps serving."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.bind((address, 0))
        me = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{address}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {address}:{me};branch=z9hG4bK{me}\r\n"
            f"From: <sip:probe@{address}>;tag=1\r\nTo: <sip:{address}>\r\n"
            f"Call-ID: upnp-probe-{me}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (address, port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def page(client, server: VirtualServer) -> str:
    client.force_login(make_member(server.tenant, "viewer"))
    return re.sub(r"\s+", " ", client.get(server.get_absolute_url()).content.decode())


def test_phone_outside_calls_through_the_router_mappings(lab, office, short_tmp, client):
    lab.create()
    office.start()
    server = make_server("Branch")
    assert wait_until(lambda: upnp_state(server) == UpnpState.MAPPED, 30), upnp_log(office)

    # The router forwards the SIP port and the whole media block (21 of its 30 mappings).
    wanted = {server.sip_port} | media_block(server)
    assert wait_until(lambda: lab.forwarded() == wanted, 10), lab.forwarded()
    assert server.upnp_media_ports == 20
    office.host.refresh_from_db()
    assert office.host.router_external_address == lab.external
    # The worker was told the external address without a restart.
    pid = office.worker_pid(server.pk)
    assert wait_until(
        lambda: worker_config(office, server).get("public_address") == lab.external, 15
    )
    assert office.worker_pid(server.pk) == pid
    html = page(client, server)
    assert f"{lab.external}:{server.sip_port}" in html
    assert 'id="upnp-state">Mapped<' in html
    assert "5 concurrent relayed calls" in html

    # Two phones outside register to the external address and call with audio both ways.
    target = f"{lab.external}:{server.sip_port}"
    caller_lan, callee_lan = (
        Lan(lab.wan, lab.phone, lab.phone),
        Lan(lab.wan, lab.phone2, lab.phone2),
    )
    phones = LanSipp(short_tmp)
    peers: list[RtpPeer] = []
    try:
        with in_netns(lab.wan):
            caller, callee = RtpPeer(lab.phone), RtpPeer(lab.phone2)
        peers += [caller, callee]
        phones.register(callee_lan, target, "101")
        uas, uas_log = phones.start(
            callee_lan, "uas_audio_logged.xml", None, None, ["-key", "aport", str(callee.port)]
        )
        uac, uac_log = phones.start(
            caller_lan, "uac_audio_logged.xml", target, "100",
            ["-s", "101", "-key", "aport", str(caller.port), "-d", str(CALL_MS)],
        )  # fmt: skip
        to_callee = sdp_seen(uac_log.with_suffix(".log"), "answered")[:2]
        to_caller = sdp_seen(uas_log.with_suffix(".log"), "offered")[:2]
        for host, port in (to_callee, to_caller):
            assert host == lab.external and port in media_block(server)
        talk([(caller, to_callee), (callee, to_caller)])
        for proc, log in ((uac, uac_log), (uas, uas_log)):
            assert proc.wait(CALL_MS / 1000 + 10) == 0, phones.output(log)
        for peer in (caller, callee):
            assert len(peer.received) >= PACKETS - 2, f"heard {len(peer.received)} of {PACKETS}"
            assert {source[0] for _, source in peer.received} == {lab.external}
    finally:
        phones.stop_all()
        for peer in peers:
            peer.close()

    # The router reboots, loses the mappings and gets a new external address: the next
    # renewal (half the lease) puts the mappings back, and the worker advertises the new
    # address after a reload, not a restart; phones reach it there.
    lab.reboot_router(external=f"10.199.{lab.x + 1}.4")
    assert lab.forwarded() == set()
    assert wait_until(lambda: lab.forwarded() == wanted, LEASE + 10), upnp_log(office)
    assert wait_until(
        lambda: worker_config(office, server).get("public_address") == lab.external, 15
    )
    assert office.worker_pid(server.pk) == pid
    phones.register(callee_lan, f"{lab.external}:{server.sip_port}", "101")
    assert f"{lab.external}:{server.sip_port}" in page(client, server)

    # The server stops: its mappings go, its page no longer shows a UPnP state.
    services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)
    assert wait_until(lambda: lab.forwarded() == set(), 15), lab.forwarded()
    assert wait_until(lambda: upnp_state(server) == "", 10)


def test_mappings_are_shared_out_and_big_editions_forward_by_hand(lab, office, client):
    lab.create()
    office.start()
    first = make_server("First")  # 1 + 20 of the router's 30 mappings
    assert wait_until(lambda: upnp_state(first) == UpnpState.MAPPED, 30), upnp_log(office)
    big = make_server("Big", edition=100)
    small = make_server("Small")
    assert wait_until(lambda: upnp_state(big) == UpnpState.MANUAL, 15), upnp_log(office)
    assert wait_until(lambda: upnp_state(small) == UpnpState.MAPPED, 15), upnp_log(office)

    # The small one gets its SIP port and 8 media ports: two calls; its relay uses no other.
    assert small.upnp_media_ports == 8
    mapped = {first.sip_port, small.sip_port} | media_block(first)
    mapped |= set(range(small.media_port_first, small.media_port_first + 8))
    assert wait_until(lambda: lab.forwarded() == mapped, 10), lab.forwarded()
    block = [small.media_port_first, small.media_port_first + 7]
    assert wait_until(lambda: listen_of(office, small).get("media_ports") == block, 15)
    assert "2 concurrent relayed calls" in page(client, small)

    # The 100-client server maps nothing and says which ports to forward by hand.
    html = page(client, big)
    assert 'id="upnp-state">Forward ports by hand: edition of 100 clients or more<' in html
    assert f"UDP {big.sip_port}" in html
    assert f"UDP {big.media_port_first}-{big.media_port_last}" in html
    assert not media_block(big) & lab.forwarded()
    assert answers_options(lab.host, big.sip_port)

    # A fourth server finds no room left: it too is told to forward by hand.
    late = make_server("Late")
    assert wait_until(lambda: upnp_state(late) == UpnpState.NO_ROOM, 15), upnp_log(office)
    assert "no room left on the router" in page(client, late)
    # The host's limit counts across its servers: raised, the late one maps as well.
    SipHost.objects.filter(pk=office.host.pk).update(
        router_max_mappings=F("router_max_mappings") + 21
    )
    assert wait_until(lambda: upnp_state(late) == UpnpState.MAPPED, 15), upnp_log(office)
    assert wait_until(lambda: late.sip_port in lab.forwarded(), 10)

    # A deleted server's mappings go as a stopped one's do.
    services.server_delete(server=late)
    gone = {late.sip_port} | media_block(late)
    assert wait_until(lambda: not gone & lab.forwarded(), 15), upnp_log(office)


def test_no_router_the_worker_keeps_serving_and_says_so(lab, office, client):
    lab.create(router=False)
    office.start()
    server = make_server("Lonely")
    assert wait_until(lambda: upnp_state(server) == UpnpState.NO_ROUTER, 30), upnp_log(office)
    assert "no UPnP router answered" in server.upnp_detail
    assert wait_until(lambda: answers_options(lab.host, server.sip_port), 15)
    assert worker_config(office, server)["public_address"] == lab.host  # nothing better known
    assert 'id="upnp-state">No router found<' in page(client, server)


def test_a_router_refusing_a_port_maps_nothing_of_that_server(lab, office, client):
    lab.create()
    office.start()
    # Another LAN host holds the first SIP port of the host: the first server gets it.
    lab.map_from_lan_host(office.host.sip_port_min)
    server = make_server("Clash")
    assert server.sip_port == office.host.sip_port_min
    assert wait_until(lambda: upnp_state(server) == UpnpState.REFUSED, 30), upnp_log(office)
    assert "718" in server.upnp_detail and "ConflictInMappingEntry" in server.upnp_detail
    assert lab.forwarded() == {server.sip_port}  # the other host's only: no partial mapping
    assert wait_until(lambda: answers_options(lab.host, server.sip_port), 15)
    html = page(client, server)
    assert 'id="upnp-state">Refused by the router<' in html
    assert "ConflictInMappingEntry" in html


@pytest.mark.parametrize(
    ("mode", "reason", "described"),
    [
        ("garbage", "not well-formed", False),  # its description is not XML
        ("slow", "no answer within 2 s", False),  # it never answers
        ("soap-garbage", "not well-formed", True),  # described, but its answers are not XML
        ("bad-address", "the router reports external address 'not-an-address'", True),
    ],
)
def test_a_router_answering_garbage_or_slowly(lab, office, client, mode, reason, described):
    lab.create(router=False)
    lab.start_fake_router(mode)
    office.start()
    server = make_server(f"Fake {mode}")
    assert wait_until(lambda: upnp_state(server) == UpnpState.NO_ROUTER, 30), upnp_log(office)
    assert wait_until(lambda: upnp_state(server) and reason in server.upnp_detail, 30), (
        server.upnp_detail
    )
    assert ("this host is" in upnp_log(office)) == described  # got past the description
    assert wait_until(lambda: answers_options(lab.host, server.sip_port), 15)
    assert "Traceback" not in upnp_log(office)
    assert 'id="upnp-state">No router found<' in page(client, server)
