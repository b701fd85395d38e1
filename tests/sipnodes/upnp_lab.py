"""An office router with UPnP IGD (miniupnpd) and NAT, a SIP host behind it, a phone outside.

    root namespace = the SIP host: veth <link> 10.199.X.2/24, 10.199.X+1.0/24 via the router
    <p>-rtr: lan 10.199.X.1/24 (miniupnpd listens here, port 5000), wan 10.199.X+1.1/24
             (the external address), masquerades the LAN behind wan (nft)
    <p>-wan: eth0 10.199.X+1.2/24 and 10.199.X+1.3/24: two phones, and stund on both

The root namespace plays the host because the host's node agent and UPnP agent read
PostgreSQL and Redis on loopback; it only gets a veth and one route towards the phone's
network, through the router. miniupnpd refuses to map while its external address is
private unless it learns a "public" one by STUN, hence stund in `wan`. `<p>` and X are
picked per run, so parallel runs do not clash. `UpnpLab.destroy` removes all of it,
whatever state `create` got to, and kills miniupnpd and stund.

Needs root, `ip` (iproute2), `nft` (nftables), `miniupnpd` (miniupnpd-nftables),
`upnpc` (miniupnpc) and `stund` (stun-server).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from tests.sipnodes.engine.nat_lab import _free_octet, ip
from tests.support import ROOT, stop_process, wait_until

IGD_PORT = 5000
CHAINS = (
    "table inet filter {\n"
    "  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n"
    "  chain miniupnpd { }\n"
    "  chain prerouting { type nat hook prerouting priority -100; policy accept;"
    " jump prerouting_miniupnpd; }\n"
    "  chain prerouting_miniupnpd { }\n"
    "  chain postrouting { type nat hook postrouting priority 100; policy accept;"
    " jump postrouting_miniupnpd; }\n"
    "  chain postrouting_miniupnpd { }\n"
    "}\n"
)


class UpnpLab:
    def __init__(self, tmp: Path) -> None:
        suffix = secrets.token_hex(3)
        self.tmp = tmp
        self.prefix = f"scupnp-{suffix}"
        self.link = f"scupnp{suffix}"  # the host's veth, in the root namespace
        self.x = _free_octet()
        self.host = f"10.199.{self.x}.2"
        self.router_lan = f"10.199.{self.x}.1"
        self.external = f"10.199.{self.x + 1}.1"
        self.phone = f"10.199.{self.x + 1}.2"
        self.phone2 = f"10.199.{self.x + 1}.3"  # a second phone, and stund's second address
        self.rtr = f"{self.prefix}-rtr"
        self.wan = f"{self.prefix}-wan"
        self.namespaces: list[str] = []
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.miniupnpd: subprocess.Popen[bytes] | None = None

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def create(self, *, router: bool = True) -> UpnpLab:
        """The namespaces and NAT; with `router`, miniupnpd too (else no IGD answers)."""
        self._netns(self.rtr)
        self._netns(self.wan)
        ip("link", "add", self.link, "type", "veth", "peer", "name", "lan", "netns", self.rtr)
        ip("-n", self.rtr, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns",
           self.wan)  # fmt: skip
        ip("addr", "add", f"{self.host}/24", "dev", self.link)
        ip("link", "set", self.link, "up")
        ip("-n", self.rtr, "addr", "add", f"{self.router_lan}/24", "dev", "lan")
        ip("-n", self.rtr, "addr", "add", f"{self.external}/24", "dev", "wan")
        ip("-n", self.wan, "addr", "add", f"{self.phone}/24", "dev", "eth0")
        ip("-n", self.wan, "addr", "add", f"{self.phone2}/24", "dev", "eth0")
        for ns, dev in ((self.rtr, "lan"), (self.rtr, "wan"), (self.wan, "eth0")):
            ip("-n", ns, "link", "set", dev, "up")
        ip("route", "add", f"10.199.{self.x + 1}.0/24", "via", self.router_lan, "dev", self.link)
        ip("netns", "exec", self.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nat = (
            "table ip nat {\n  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr 10.199.{self.x}.0/24 oifname "wan" masquerade\n  }}\n}}\n'
        )
        ip("netns", "exec", self.rtr, "nft", "-f", "-", stdin=nat + CHAINS)
        self._daemon(["ip", "netns", "exec", self.wan, "stund", "-h", self.phone, "-a",
                      self.phone2], "stund")  # fmt: skip
        if router:
            self.start_router()
        return self

    def start_fake_router(self, mode: str) -> None:
        """A broken IGD instead of miniupnpd (tests/sipnodes/upnp/fake_igd.py)."""
        args = ["ip", "netns", "exec", self.rtr, sys.executable, "-m"]
        args += ["tests.sipnodes.upnp.fake_igd", self.router_lan, mode]
        self._daemon(args, "fake-igd")
        if not wait_until(self._igd_listening, 15, 0.1):
            raise RuntimeError(f"the fake IGD did not start:\n{self.log('fake-igd')}")

    def _daemon(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.daemons.append(proc)
        return proc

    def start_router(self) -> None:
        """Start miniupnpd (again, after `stop_router`: a router reboot)."""
        conf = self.tmp / f"{self.prefix}-miniupnpd.conf"
        conf.write_text(
            "ext_ifname=wan\nlistening_ip=lan\n"
            f"port={IGD_PORT}\nenable_upnp=yes\nenable_natpmp=no\nsecure_mode=no\n"
            f"ext_perform_stun=yes\next_stun_host={self.phone}\next_stun_port=3478\n"
            f"uuid=3d3cec3a-8cf0-11e0-98ee-{secrets.token_hex(6)}\n"
            "system_uptime=yes\nclean_ruleset_interval=0\n"
            "allow 1024-65535 0.0.0.0/0 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        )
        args = ["ip", "netns", "exec", self.rtr, "miniupnpd", "-f", str(conf), "-d"]
        args += ["-P", str(self.tmp / f"{self.prefix}-miniupnpd.pid")]
        self.miniupnpd = self._daemon(args, "miniupnpd")
        if not wait_until(self._igd_listening, 15, 0.1):
            raise RuntimeError(f"miniupnpd did not start:\n{self.log('miniupnpd')}")

    def _igd_listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.router_lan, IGD_PORT)) == 0

    def stop_router(self) -> None:
        """Stop miniupnpd and drop its mappings, as a router reboot does."""
        stop_process(self.miniupnpd)
        ip("netns", "exec", self.rtr, "nft", "flush", "chain", "inet", "filter", "miniupnpd")
        for chain in ("prerouting_miniupnpd", "postrouting_miniupnpd"):
            ip("netns", "exec", self.rtr, "nft", "flush", "chain", "inet", "filter", chain)

    def reboot_router(self, external: str) -> None:
        """A router reboot that loses every mapping and comes back with a new external
        address, as after an ISP's new lease."""
        self.stop_router()
        ip("-n", self.rtr, "addr", "del", f"{self.external}/24", "dev", "wan")
        ip("-n", self.rtr, "addr", "add", f"{external}/24", "dev", "wan")
        self.external = external
        self.start_router()

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def forwarded(self) -> set[int]:
        """The external port of every mapping in the router's nftables (`th dport N dnat`)."""
        out = ip("netns", "exec", self.rtr, "nft", "list", "chain", "inet", "filter",
                 "prerouting_miniupnpd")  # fmt: skip
        found = set()
        for line in out.splitlines():
            words = line.split()
            if "dport" in words and "dnat" in words:
                found.add(int(words[words.index("dport") + 1]))
        return found

    def map_from_lan_host(self, port: int) -> None:
        """Another LAN host (10.199.X.9) holds a mapping of `port` UDP, as a game console
        would. Asked from the root namespace: `secure_mode=no` lets one host map for another."""
        result = subprocess.run(
            ["upnpc", "-u", f"http://{self.router_lan}:{IGD_PORT}/rootDesc.xml", "-e",
             "other LAN host", "-a", f"10.199.{self.x}.9", str(port), str(port), "UDP"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        if "is redirected to" not in result.stdout:
            raise RuntimeError(f"upnpc could not map {port}: {result.stdout}{result.stderr}")

    def destroy(self) -> None:
        for proc in reversed(self.daemons):
            stop_process(proc)
        gone = (RuntimeError, subprocess.TimeoutExpired)
        for name in reversed(self.namespaces):
            with contextlib.suppress(*gone):
                ip("netns", "del", name)
        with contextlib.suppress(*gone):  # deleted with its peer in the router, if that existed
            ip("link", "del", self.link)
