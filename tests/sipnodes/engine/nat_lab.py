"""Two phones' LANs, each behind its own masquerading router, in network namespaces.

    root namespace: the worker, on veth scnat<sfx> 10.199.X.1/24 --+
                                                                  | bridge "wan" in <p>-wan
    <p>-rtr1: wan 10.199.X.11/24, lan 10.199.X+1.1/24 ------------+
    <p>-rtr2: wan 10.199.X.12/24, lan 10.199.X+2.1/24 ------------+
    <p>-lan1: eth0 10.199.X+1.2/24, default route via rtr1
    <p>-lan2: eth0 10.199.X+2.2/24, default route via rtr2

`<p>` is `scnat-<random suffix>` and X a third octet no route of the root
namespace uses, both picked per run. Each router masquerades its LAN behind its
wan address (nft), so the server sees a phone as 10.199.X.1N. The routers have
no default route and the root namespace gets `unreachable` routes for the two
LANs: as on the internet, a private address is reachable from its own LAN only.
`NatLab.destroy` removes all of it, whatever state `create` got to.

Needs root and `ip` (iproute2), `nft` (nftables).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import stop_process, wait_for

from .processes import SIPP_DIR

CLONE_NEWNET = 0x40000000  # <sched.h>; os.CLONE_NEWNET only from Python 3.12
_libc = ctypes.CDLL(None, use_errno=True)
SIP_PORT = 5060  # each phone's own, inside its LAN


@dataclass(frozen=True)
class Lan:
    namespace: str
    phone: str  # the phone's private address, the one its SDP shows
    public: str  # its router's wan address: the phone's source as the server sees it


def ip(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def veth(ns: str | None, name: str, peer: str, peer_ns: str) -> None:
    """A veth pair: `name` in namespace `ns` (None: the root one), `peer` in `peer_ns`."""
    where = ("-n", ns) if ns else ()
    ip(*where, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)


def _free_octet() -> int:
    """A third octet X with 10.199.X..X+2 in no address or route of the root namespace."""
    used = ip("-4", "-o", "addr") + ip("-4", "route", "show", "table", "all")
    for _ in range(50):
        x = random.randrange(4, 250, 4)
        if not any(f"10.199.{n}." in used for n in (x, x + 1, x + 2)):
            return x
    raise RuntimeError("no free 10.199.X.0/24 triple for the NAT namespaces")


class NatLab:
    def __init__(self) -> None:
        suffix = secrets.token_hex(3)
        self.prefix = f"scnat-{suffix}"
        self.link = f"scnat{suffix}"  # the server's veth, in the root namespace
        self.x = _free_octet()
        self.server = f"10.199.{self.x}.1"
        self.lans = [
            Lan(f"{self.prefix}-lan{i}", f"10.199.{self.x + i}.2", f"10.199.{self.x}.1{i}")
            for i in (1, 2)
        ]
        self.namespaces: list[str] = []
        self.routes: list[str] = []

    def _netns(self, name: str) -> str:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def create(self) -> NatLab:
        wan = self._netns(f"{self.prefix}-wan")
        ip("-n", wan, "link", "add", "wan", "type", "bridge")
        ip("-n", wan, "link", "set", "wan", "up")
        veth(None, self.link, "server", wan)
        ip("-n", wan, "link", "set", "server", "master", "wan", "up")
        ip("addr", "add", f"{self.server}/24", "dev", self.link)
        ip("link", "set", self.link, "up")
        for i, lan in enumerate(self.lans, 1):
            rtr = self._netns(f"{self.prefix}-rtr{i}")
            self._netns(lan.namespace)
            veth(rtr, "wan", f"rtr{i}", wan)
            ip("-n", wan, "link", "set", f"rtr{i}", "master", "wan", "up")
            veth(rtr, "lan", "eth0", lan.namespace)
            lan_net = f"10.199.{self.x + i}"
            ip("-n", rtr, "addr", "add", f"{lan.public}/24", "dev", "wan")
            ip("-n", rtr, "addr", "add", f"{lan_net}.1/24", "dev", "lan")
            ip("-n", lan.namespace, "addr", "add", f"{lan.phone}/24", "dev", "eth0")
            for ns, dev in ((rtr, "wan"), (rtr, "lan"), (lan.namespace, "eth0")):
                ip("-n", ns, "link", "set", dev, "up")
            ip("-n", lan.namespace, "route", "add", "default", "via", f"{lan_net}.1")
            ip("netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            ruleset = (
                "table ip nat {\n"
                "  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                f'    ip saddr {lan_net}.0/24 oifname "wan" masquerade\n'
                "  }\n"
                "}\n"
            )
            ip("netns", "exec", rtr, "nft", "-f", "-", stdin=ruleset)
            ip("route", "add", "unreachable", f"{lan_net}.0/24")
            self.routes.append(f"{lan_net}.0/24")
        return self

    def destroy(self) -> None:
        gone = (RuntimeError, subprocess.TimeoutExpired)  # never made, or already gone
        for route in self.routes:
            with contextlib.suppress(*gone):
                ip("route", "del", "unreachable", route)
        for name in reversed(self.namespaces):
            with contextlib.suppress(*gone):
                ip("netns", "del", name)
        with contextlib.suppress(*gone):  # deleted with its peer in "wan", if that existed
            ip("link", "del", self.link)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace `name`: the sockets it makes live there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns to {name}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
    finally:
        os.close(target)
        os.close(home)


class LanSipp:
    """SIPp as a phone in a LAN namespace: bound to the phone's private address, port 5060."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.count = 0
        self.background: list[subprocess.Popen[bytes]] = []

    def _args(
        self, lan: Lan, scenario: str, target: str | None, user: str | None, extra: list[str]
    ) -> tuple[list[str], Path]:
        self.count += 1
        base = self.tmp / f"{lan.namespace}-{self.count}"
        args = ["ip", "netns", "exec", lan.namespace, "sipp"] + ([target] if target else [])
        args += ["-sf", str(SIPP_DIR / scenario), "-i", lan.phone, "-p", str(SIP_PORT)]
        args += ["-nostdin", "-timeout", "15s", "-timeout_error", "-m", "1"]
        args += ["-trace_err", "-error_file", f"{base}.err", "-trace_logs", "-log_file"]
        args += [f"{base}.log", "-trace_msg", "-message_file", f"{base}.msg"]
        if user is not None:
            csv = base.with_suffix(".csv")
            auth = f"[authentication username={user} password=pw{user}]"
            csv.write_text(f"SEQUENTIAL\n{user};{auth}\n")
            args += ["-inf", str(csv)]
        return args + extra, base

    def register(self, lan: Lan, server: str, user: str) -> None:
        args, base = self._args(lan, "register.xml", server, user, [])
        proc = subprocess.run(args, cwd=self.tmp, capture_output=True, timeout=20)
        assert proc.returncode == 0, self.output(base)

    def start(
        self, lan: Lan, scenario: str, target: str | None, user: str | None, extra: list[str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a scenario; the process and the stem of its log files (`.log`, `.msg`, `.err`)."""
        args, base = self._args(lan, scenario, target, user, extra)
        proc = subprocess.Popen(
            args, cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.background.append(proc)
        if target is None:  # a UAS: ready once bound, as /proc shows its own namespace
            wait_for(lambda: bound(proc.pid, SIP_PORT), 10, f"SIPp to listen in {lan.namespace}")
        return proc, base

    def output(self, base: Path) -> str:
        paths = [base.with_suffix(s) for s in (".log", ".err")]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def stop_all(self) -> None:
        for proc in self.background:
            stop_process(proc)


def bound(pid: int, port: int) -> bool:
    """Process `pid` (or another in its network namespace) has a UDP socket on `port`."""
    try:
        lines = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines)
