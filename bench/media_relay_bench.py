"""Media relay bench: our worker's relay and rtpengine, side by side, in one run.

Both relays run pinned to core 0 and are driven by the same packet generator
pinned to core 1, with the same 200 calls (400 RTP streams, 172-byte G.711-like
packets: 12-byte RTP header + 160 bytes):

- **rtpengine** (Debian 12: `apt-get install rtpengine-daemon`, or the
  `rtpengine` metapackage), userspace forwarding only (`--table=-1`), one
  signalling and one media thread, `taskset -c 0`; its 200 calls are set up
  with offer/answer over its ng control protocol (bencode over UDP, the small
  client below).
- **our relay**: a real worker, `python -m sipnodes.engine --config FILE`
  under `taskset -c 0`, media relay on, a media block of 4 ports per call
  (plus the signalling step's calls and spare), a
  throwaway redis-server for its events (on core 1). Its 200 calls are real
  SIP calls made by the minimal UAC/UAS below: the callee registers (digest),
  the caller's INVITE is challenged (407) and sent again with credentials,
  the worker forwards it with rewritten SDP to the callee, which answers 200
  with SDP. So the relay holds 200 calls x 2 directions of latched streams,
  exactly as in production (compiled build when `build/engine` is current;
  the output says which).

Measured per relay:

1. **throughput ladder** (`--rates`, default 20k..200k pps and `max`): a
   fresh relay and fresh calls for every step (an overloaded step must not
   poison the next: rtpengine stops reading a socket after repeated
   receive-queue overruns, and a relay's 1 MiB socket backlogs take a while
   to drain), primed (3 packets per phone, so every stream is latched),
   then `--seconds` at the rate, every packet counted. Forwarded packets are
   counted by the kernel: the phones' sockets get the minimum receive buffer
   and nobody reads them while sending, so every forwarded packet shows up
   as a receive-buffer drop in /proc/net/udp (plus the few left queued).
   `forwarded_pps` (goodput) counts what was forwarded by the end of sending
   (`snapshot_late_ms` says how late that snapshot was); loss = packets not
   forwarded even 0.5 s later (`forwarded_late`: the backlog forwarded in
   those 0.5 s); "sustained" = the highest
   step under 0.1 % loss. Steps above the limit show goodput past it.
2. **latency** at `--latency-rate` (20,000 pps = 200 G.711 calls at 20 ms):
   each packet carries its send time (CLOCK_REALTIME, ns) and a step tag; a
   receiver process reads every phone socket and takes the kernel's arrival
   timestamp (SO_TIMESTAMPNS: when the relay's send queued the packet on the
   phone's socket) minus the send time: one way, generator -> relay -> phone
   socket. The sender runs at real-time priority in latency steps (it sleeps
   between packets, so the core is not starved), the receiver at the lowest:
   nothing on core 1 runs between stamping a packet and sending it, and when
   the receiver gets round to reading is not counted. p50/p99/p99.9 after a
   1 s (`--warmup`) untagged warm-up; `--latency-runs` (3) fresh runs per
   relay, the relays taking turns (a slow spell of a shared VM then falls on
   both), the run with the median p99 reported. Each run also counts its
   seconds with a p99 over 1 ms: whether the tail is every second's or a
   few bad seconds'.
3. **generator alone**: the same senders with the phones connected to each
   other (no relay), unpaced (what the generator can offer at all) and at the
   latency rate (the generator's own latency floor). A ladder step that
   offered under 97 % of its rate, or 95 % of that ceiling, is marked
   generator-bound. Every step also reports `gen_pps_per_cpu_s`, packets per
   second of sender CPU: the generator's ceiling on a free core.
4. **signalling while relaying** (ours only, `--signalling-calls`): up to 50
   more calls set up one after the other during a 20,000 pps step, against
   `setup_calls_per_s` of the idle setup (one client, one call at a time: a
   setup latency figure, not the worker's call capacity; see
   bench/engine_sip_bench.py for that).

Generator design (why it is not the bottleneck). Sending and receiving are
separate processes (forked from this one, sharing the 400 phone sockets),
all pinned to core 1 (`--gen-core`); the relay gets core 0 to itself.
Each phone socket is connected to its relay port (as the relay's SDP says),
so sending is a plain `send()` of a preallocated buffer re-stamped with
`struct.pack_into`: no allocation, no address per packet. Senders pace to
the aggregate rate on an absolute schedule (catching up in batches of at
most 32) and spread packets round-robin over their streams. Throughput
steps have no receiver at all (the kernel counts), so core 1 only sends;
latency steps run a receiver next to a sender that sleeps between packets
(timer slack 1 ns) so the receiver is never starved by a busy-polling
sender. `--senders N` splits the streams over N sender processes (useful
when the generator gets more than one core; on one core one sender is the
smoothest). Measured on the loaded 2-core VM, one Python sender costs
~4.5-6 us of CPU per packet (170-230k packets/s per CPU-second, most of it
the kernel's loopback delivery inside `send`), so the 200k step may be at
the generator's edge: the table says so when it is; then a sendmmsg helper
in C would be the next step.

Full run (about 4 minutes with the defaults; run it on a quiet machine,
as root so socket buffers can be forced and rtpengine may bind its ports):

    taskset -c 1 .venv/bin/python bench/media_relay_bench.py

Smoke test (one short step per side, a few seconds each):

    .venv/bin/python bench/media_relay_bench.py --rates 20000 --seconds 1 \\
        --latency-seconds 1 --no-ceiling

Prints one JSON line per step, then a markdown table with the ratio
ours/rtpengine. Loopback only; every loop and wait is bounded; every child
(rtpengine, worker, redis, generator processes) is stopped at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PACKET = 172  # 12-byte RTP header + 160 bytes of G.711 (20 ms at 8 kHz)
# RTP header (V=2, PT 0, seq, timestamp, SSRC), then send time (ns), step tag, stream id
STAMP = struct.Struct("!BBHIIQBI")
TAIL = struct.Struct("!QB")  # send time and tag, read back at offset 12
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_TIMERSLACK = 29
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35  # Linux: each datagram's arrival time (CLOCK_REALTIME) as ancillary data
ARRIVAL = struct.Struct("qq")  # struct timespec
PHONE_BUFFER = 4 * 1024 * 1024
LOSS_LIMIT_PCT = 0.1
LATENCY_KEYS = (
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "seconds_p99_over_1ms",
)
REALM = "bench.sipcloud"
CALLER, CALLEE = "1000", "2000"
mono = time.monotonic_ns
wall = time.time_ns  # the send stamp: the same clock as the kernel's arrival stamp


# ---------------------------------------------------------------- helpers


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port free for UDP and TCP now (the worker listens on both)."""
    for _ in range(100):
        port = random.randint(40000, 60000)  # above our blocks (below 32700)
        u, t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
        try:
            u.bind((HOST, port))
            t.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def free_block(size: int, low: int = 10000, high: int = 32700) -> int:
    """First port of `size` consecutive UDP ports free now (even), below the ephemeral range."""
    for _ in range(50):
        first = random.randrange(low, high - size, 2)
        socks = []
        try:
            for port in range(first, first + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free block of {size} UDP ports")


def proc_ticks(pid: int) -> int:
    """utime + stime of a process, all threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def core_ticks() -> dict[str, tuple[int, int]]:
    """{"cpuN": (busy, total)} from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            v = [int(x) for x in line.split()[1:9]]
            out[line.split()[0]] = (sum(v) - v[3] - v[4], sum(v))
    return out


def busy_pct(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]) -> dict[str, float]:
    return {
        c: round(100.0 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 1) for c in b if c in a
    }


def udp_drops(ports: set[int], relay_ports: range) -> tuple[int, int]:
    """Receive-buffer drops on 127.0.0.1 UDP sockets: (phones' `ports`, relay's `relay_ports`)."""
    phones = relay = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            p = line.split()
            ip, hexport = p[1].split(":")
            if ip != "0100007F":
                continue
            port = int(hexport, 16)
            if port in ports:
                phones += int(p[-1])
            elif port in relay_ports:
                relay += int(p[-1])
    return phones, relay


def set_buffers(sock: socket.socket, rcv: int, snd: int | None = None) -> None:
    for size, force, plain in (
        (rcv, SO_RCVBUFFORCE, socket.SO_RCVBUF),
        (snd, SO_SNDBUFFORCE, socket.SO_SNDBUF),
    ):
        if size is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)  # root: past net.core.*mem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def drain(socks: list[socket.socket], limit: int = 100_000) -> int:
    """Read whatever the (non-blocking) sockets hold; the count, bounded."""
    n = 0
    for s in socks:
        while n < limit:
            try:
                s.recv(4096)
            except OSError:
                break
            n += 1
    return n


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 8) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def sdp_body(port: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {HOST}\r\ns=bench\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


_M_AUDIO = re.compile(r"^m=audio (\d+) ", re.M)
_C_IN = re.compile(r"^c=IN IP4 (\S+)", re.M)


def sdp_target(body: str) -> tuple[str, int]:
    """The RTP address an SDP body names (session or media c= line, first audio m= line)."""
    m, c = _M_AUDIO.search(body), _C_IN.search(body)
    if not m or not c:
        raise ValueError(f"no audio stream in SDP: {body!r}")
    return c.group(1), int(m.group(1))


# ---------------------------------------------------------------- rtpengine's ng protocol


def bencode(x: Any) -> bytes:
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(v) for v in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(x).__name__}")


def bdecode(data: bytes) -> Any:
    def item(i: int) -> tuple[Any, int]:
        lead = data[i : i + 1]
        if lead == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if lead in (b"l", b"d"):
            i += 1
            values = []
            while data[i : i + 1] != b"e":
                v, i = item(i)
                values.append(v)
            if lead == b"l":
                return values, i + 1
            pairs = zip(values[::2], values[1::2], strict=True)
            return {k.decode(): v for k, v in pairs}, i + 1
        colon = data.index(b":", i)
        size = int(data[i:colon])
        return data[colon + 1 : colon + 1 + size], colon + 1 + size

    return item(0)[0]


class NgClient:
    """Request/response over UDP: `cookie bencoded-dict`, answered with the same cookie."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(1.0)
        self.prefix = uuid.uuid4().hex[:8]
        self.seq = 0

    def command(self, name: str, **args: Any) -> dict:
        self.seq += 1
        cookie = f"{self.prefix}{self.seq}".encode()
        msg = {"command": name, **{k.replace("_", "-"): v for k, v in args.items()}}
        packet = cookie + b" " + bencode(msg)
        for _ in range(3):  # UDP: resend on timeout, then give up
            self.sock.sendto(packet, self.address)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65535)
                except TimeoutError:
                    break
                got, _, body = data.partition(b" ")
                if got == cookie:
                    reply = bdecode(body)
                    if reply.get("result") not in (b"ok", b"pong"):
                        raise RuntimeError(f"ng {name}: {reply!r}")
                    return reply
        raise TimeoutError(f"ng {name}: no answer from {self.address}")

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------- minimal SIP UA


def digest_header(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """The Authorization/Proxy-Authorization value answering an MD5 digest challenge."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in params.get("qop", "").split(","):
        cnonce = uuid.uuid4().hex[:16]
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    parts += [f'response="{response}"', "algorithm=MD5"]
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts)


class SipMsg:
    def __init__(self, data: bytes) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        self.first = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        self.body = body.decode(errors="replace")
        self.status = int(self.first.split()[1]) if self.first.startswith("SIP/2.0") else 0
        self.method = "" if self.status else self.first.split()[0]

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    @property
    def cseq_method(self) -> str:
        return self.get("cseq").split()[-1] if self.get("cseq") else ""


def challenge_of(msg: SipMsg, header: str) -> str:
    """The MD5 challenge (the worker offers MD5 first, SHA-256 next)."""
    values = msg.all(header)
    return next((v for v in values if "MD5" in v.upper() or "algorithm" not in v), values[0])


class MiniSip:
    """Caller (UAC) and callee (UAS) sockets against one worker; calls one at a time."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.uac, self.uas):
            s.bind((HOST, 0))
            s.setblocking(False)
        self.uac_port, self.uas_port = self.uac.getsockname()[1], self.uas.getsockname()[1]
        self.uas_answers: dict[str, bytes] = {}  # Call-ID -> the 200 we sent (retransmissions)
        self.callee_port = 0  # the SDP port the UAS answers the next INVITE with
        self.callee_target: tuple[str, int] | None = None  # the relay port the worker named to it
        self.dialogs: list[dict[str, str]] = []

    @staticmethod
    def branch() -> str:
        return "z9hG4bK" + uuid.uuid4().hex[:16]

    def _send(self, sock: socket.socket, text: str, body: str = "") -> None:
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        data = f"{text}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}"
        sock.sendto(data.encode(), self.server)

    def _serve_uas(self, data: bytes) -> None:
        msg = SipMsg(data)
        if msg.status:
            return
        call_id = msg.get("call-id")
        vias = "".join(f"Via: {v}\r\n" for v in msg.all("via"))
        base = f"{vias}From: {msg.get('from')}\r\nCall-ID: {call_id}\r\nCSeq: {msg.get('cseq')}\r\n"
        if msg.method == "INVITE":
            if call_id not in self.uas_answers:
                self.callee_target = sdp_target(msg.body)
                body = sdp_body(self.callee_port, 2000)
                to = msg.get("to") + ";tag=" + uuid.uuid4().hex[:8]
                text = (
                    f"SIP/2.0 200 OK\r\n{base}To: {to}\r\n"
                    f"Contact: <sip:{CALLEE}@{HOST}:{self.uas_port}>\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                )
                self.uas_answers[call_id] = text.encode()
            self.uas.sendto(self.uas_answers[call_id], self.server)
        elif msg.method != "ACK":  # BYE, OPTIONS, ...: 200
            self._send(self.uas, f"SIP/2.0 200 OK\r\n{base}To: {msg.get('to')}\r\n")

    def _wait(self, want: Callable[[SipMsg], bool], timeout: float = 5.0) -> SipMsg:
        """Serve the UAS and read the UAC until a message `want`s; bounded."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.uac, self.uas], [], [], left)
            for s in ready:
                try:
                    data = s.recv(65535)
                except OSError:
                    continue
                if s is self.uas:
                    self._serve_uas(data)
                    continue
                msg = SipMsg(data)
                if want(msg):
                    return msg
        raise TimeoutError("no answer from the worker")

    def register_callee(self, password: str, timeout: float = 10.0) -> None:
        """REGISTER (401) and REGISTER with credentials (200); retried while the worker starts."""
        uri = f"sip:{self.server[0]}:{self.server[1]}"
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        auth = ""
        deadline = time.monotonic() + timeout
        for cseq in range(1, 100):
            if time.monotonic() > deadline:
                break
            self._send(
                self.uas,
                f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{self.uas_port};"
                f"branch={self.branch()};rport\r\nMax-Forwards: 70\r\n"
                f"From: <sip:{CALLEE}@{HOST}>;tag={tag}\r\nTo: <sip:{CALLEE}@{HOST}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{CALLEE}@{HOST}:{self.uas_port}>\r\nExpires: 3600\r\n{auth}",
            )
            ready, _, _ = select.select([self.uas], [], [], 0.5)
            if not ready:
                continue  # the worker is still starting
            msg = SipMsg(self.uas.recv(65535))
            if msg.status == 401:
                challenge = challenge_of(msg, "www-authenticate")
                value = digest_header(challenge, CALLEE, password, "REGISTER", uri)
                auth = f"Authorization: {value}\r\n"
            elif msg.status == 200:
                return
            elif msg.status >= 300:
                raise RuntimeError(f"REGISTER refused: {msg.first}")
        raise TimeoutError("the worker did not answer REGISTER")

    def call(
        self, password: str, caller_port: int, callee_port: int
    ) -> tuple[tuple[str, int], tuple[str, int]]:
        """One call: INVITE, 407, ACK, INVITE with credentials, 200, ACK.

        Returns (relay address the caller sends to, relay address the callee sends to).
        """
        self.callee_port, self.callee_target = callee_port, None
        uri = f"sip:{CALLEE}@{self.server[0]}:{self.server[1]}"
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        body = sdp_body(caller_port, 1000)
        common = (
            f"From: <sip:{CALLER}@{HOST}>;tag={tag}\r\nCall-ID: {call_id}\r\nMax-Forwards: 70\r\n"
        )
        auth = ""
        for cseq in (1, 2):
            branch = self.branch()
            via = f"Via: SIP/2.0/UDP {HOST}:{self.uac_port};branch={branch};rport\r\n"
            self._send(
                self.uac,
                f"INVITE {uri} SIP/2.0\r\n{via}{common}To: <sip:{CALLEE}@{HOST}>\r\n"
                f"CSeq: {cseq} INVITE\r\nContact: <sip:{CALLER}@{HOST}:{self.uac_port}>\r\n{auth}",
                body,
            )
            final = self._wait(lambda m, c=cseq: m.status >= 200 and m.get("cseq") == f"{c} INVITE")
            if final.status == 407 and cseq == 1:
                self._send(  # ACK of a non-2xx: same branch, the response's To
                    self.uac,
                    f"ACK {uri} SIP/2.0\r\n{via}{common}To: {final.get('to')}\r\nCSeq: 1 ACK\r\n",
                )
                value = digest_header(
                    challenge_of(final, "proxy-authenticate"), CALLER, password, "INVITE", uri
                )
                auth = f"Proxy-Authorization: {value}\r\n"
                continue
            if final.status != 200:
                raise RuntimeError(f"INVITE answered {final.first}")
            contact = final.get("contact").strip("<>").split(">")[0] or uri
            dialog = {"uri": contact, "to": final.get("to"), "common": common}
            self._send(
                self.uac,
                f"ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{self.uac_port};"
                f"branch={self.branch()};rport\r\n{common}To: {dialog['to']}\r\nCSeq: 2 ACK\r\n",
            )
            self.dialogs.append(dialog)
            if self.callee_target is None:
                raise RuntimeError("the callee never saw the INVITE")
            return sdp_target(final.body), self.callee_target
        raise RuntimeError("INVITE challenged twice")

    def hang_up_all(self, timeout: float = 3.0) -> int:
        """BYE every call; the count of 200s within `timeout`."""
        for d in self.dialogs:
            self._send(
                self.uac,
                f"BYE {d['uri']} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{self.uac_port};"
                f"branch={self.branch()};rport\r\n{d['common']}To: {d['to']}\r\nCSeq: 3 BYE\r\n",
            )
        done = 0
        try:
            while done < len(self.dialogs):
                self._wait(lambda m: m.status == 200 and m.cseq_method == "BYE", timeout)
                done += 1
        except TimeoutError:
            pass
        self.dialogs.clear()
        return done

    def close(self) -> None:
        self.uac.close()
        self.uas.close()


# ---------------------------------------------------------------- the relays under test


class Relay:
    """A relay started fresh per step: `start` sets up `calls` calls between phone ports."""

    name = ""
    proc: subprocess.Popen | None = None
    ports = range(0)  # the relay's media ports (for its socket-drop count)

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.info: dict[str, Any] = {}

    def taskset(self) -> list[str]:
        return ["taskset", "-c", str(self.args.relay_core)]

    def start(
        self, phone_ports: list[tuple[int, int]]
    ) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()

    log_name = ""
    log_patterns: dict[str, str] = {}  # noqa: RUF012 (class constant, never mutated)

    def log_mark(self) -> int:
        path = self.workdir / self.log_name
        return path.stat().st_size if self.log_name and path.exists() else 0

    def log_events(self, mark: int) -> dict:
        """How often each of `log_patterns` was logged since `mark` (overload symptoms)."""
        if not self.log_patterns:
            return {}
        with (self.workdir / self.log_name).open("rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return {key: text.count(p) for key, p in self.log_patterns.items()}

    def calls_during(self, count: int, t_end: int) -> dict:
        return {}

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0


class Rtpengine(Relay):
    name = "rtpengine"
    log_name = "rtpengine.log"
    # rtpengine's own overload messages: a socket whose queue exceeded 50 packets
    # 5 times has its packets discarded from then on
    log_patterns = {
        "log_queue_over_50": "Too many packets in UDP receive queue",
        "log_queue_strikes_discarding": "UDP receive queue exceeded",
    }

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        exe = shutil.which("rtpengine")
        if exe is None:
            raise SystemExit("rtpengine not found: apt-get install rtpengine-daemon (Debian 12)")
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        self.info["version"] = (version.stdout + version.stderr).strip().splitlines()[-1:]
        self.exe = exe
        self.ports = args.blocks["rtpengine"]

    def start(
        self, phone_ports: list[tuple[int, int]]
    ) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        ng_port = free_port()
        log = (self.workdir / "rtpengine.log").open("ab")
        self.proc = subprocess.Popen(
            self.taskset()
            + [
                self.exe,
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--table=-1",  # no kernel forwarding: userspace only
                f"--interface={HOST}",
                f"--listen-ng={HOST}:{ng_port}",
                "--num-threads=1",
                "--media-num-threads=1",
                f"--port-min={self.ports.start}",
                f"--port-max={self.ports.stop - 1}",
                "--timeout=600",
                "--delete-delay=0",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        ng = NgClient((HOST, ng_port))
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    ng.command("ping")
                    break
                except (TimeoutError, ConnectionRefusedError, OSError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"rtpengine did not start: see {log.name}") from None
                    time.sleep(0.2)
            targets = []
            tag = uuid.uuid4().hex[:6]
            for i, (a, b) in enumerate(phone_ports):
                cid = f"bench-{tag}-{i}"
                offer = ng.command("offer", call_id=cid, from_tag=f"f{cid}", sdp=sdp_body(a, 1000))
                answer = ng.command(
                    "answer",
                    call_id=cid,
                    from_tag=f"f{cid}",
                    to_tag=f"t{cid}",
                    sdp=sdp_body(b, 2000),
                )
                # offer's SDP goes to the callee, answer's to the caller
                targets.append(
                    (sdp_target(answer["sdp"].decode()), sdp_target(offer["sdp"].decode()))
                )
            return targets
        finally:
            ng.close()


class Worker(Relay):
    name = "ours (worker)"
    log_name = "worker.log"
    log_patterns = {"log_warnings": " WARNING ", "log_errors": " ERROR "}

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        self.redis: subprocess.Popen | None = None
        self.sip: MiniSip | None = None
        redis_port = free_port()
        if shutil.which("redis-server"):
            self.redis = subprocess.Popen(
                ["taskset", "-c", str(args.gen_core), "redis-server", "--port", str(redis_port),
                 "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        self.ports = args.blocks["worker"]
        self.dead = args.blocks["dead"]
        self.password = "pw-bench"
        self.redis_url = f"redis://{HOST}:{redis_port}/0"

    def config(self, sip_port: int) -> Path:
        def user(number: str) -> dict:
            secret = f"{number}:{REALM}:{self.password}".encode()
            return {
                "number": number,
                "display_name": number,
                "ha1_md5": hashlib.md5(secret).hexdigest(),
                "ha1_sha256": hashlib.sha256(secret).hexdigest(),
                "call_level": 1,
            }

        data = {
            "server_id": 990000 + random.randint(0, 9999),
            "name": "media-bench",
            "realm": REALM,
            "max_clients": 10,
            "listen": {
                "address": HOST,
                "sip_port": sip_port,
                "media_ports": [self.ports.start, self.ports.stop - 1],
            },
            "public_address": HOST,
            "redis_url": self.redis_url,
            "spool_dir": str(self.workdir / "spool"),
            "system": {"media_relay": True},
            "media": {"timeout": 0, "relatch_after": 2},
            "call_limits": {"no_answer_timeout": 60, "max_call_duration": 0},
            "users": [user(CALLER), user(CALLEE)],
            "dial_plan": [],
        }
        path = self.workdir / "worker.json"
        path.write_text(json.dumps(data))
        return path

    def start(
        self, phone_ports: list[tuple[int, int]]
    ) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        sip_port = free_port()
        log_path = self.workdir / "worker.log"
        log = log_path.open("ab")
        mark = log_path.stat().st_size if log_path.exists() else 0
        self.proc = subprocess.Popen(
            self.taskset()
            + [sys.executable, "-m", "sipnodes.engine", "--config", str(self.config(sip_port)),
               "--log-level", "INFO"],
            cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.sip = sip = MiniSip((HOST, sip_port))
        sip.register_callee(self.password)
        tail = log_path.read_bytes()[mark:].decode(errors="replace")
        self.info["engine"] = "compiled" if " compiled engine" in tail else "Python (not compiled)"
        t0 = time.monotonic()
        targets = [sip.call(self.password, a, b) for a, b in phone_ports]
        self.info["setup_calls_per_s"] = round(len(targets) / (time.monotonic() - t0), 1)
        return targets

    def calls_during(self, count: int, t_end: int) -> dict:
        """Set up to `count` more calls, one after the other, while the relay relays.

        Their SDP names ports nobody sends from (nothing is relayed for them); they are
        hung up with the others at stop. Compare with `setup_calls_per_s` (idle relay).
        """
        assert self.sip is not None
        dead = self.dead.start
        t0, done = time.monotonic(), 0
        for i in range(count):
            if mono() >= t_end:
                break
            self.sip.call(self.password, dead + 2 * i, dead + 2 * i + 1)
            done += 1
        wall = time.monotonic() - t0
        return {
            "calls_while_relaying": done,
            "setup_calls_per_s_while_relaying": round(done / wall, 1),
        }

    def stop(self) -> None:
        if self.sip is not None:
            self.sip.hang_up_all()
            self.sip.close()
            self.sip = None
        super().stop()

    def close(self) -> None:
        self.stop()
        stop_process(self.redis)


# ---------------------------------------------------------------- the generator


def _pin(core: int) -> None:
    os.sched_setaffinity(0, {core})


def _fine_sleep() -> None:
    """Timer slack 1 ns: `time.sleep` of tens of us wakes on time (not +50 us)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def sender_main(
    socks: list[socket.socket],
    first_id: int,
    rate: float,
    t_start: int,
    t_meas: int,
    t_end: int,
    tags: tuple[int, int],
    sleepy: bool,
    core: int,
    out: Any,
) -> None:
    """Send round-robin over `socks` at `rate` pps (0: as fast as possible) from t_start to t_end.

    Reports the packets sent from t_meas on (tagged tags[1]; before that tags[0]).
    """
    _pin(core)
    _fine_sleep()
    if sleepy:
        # Nothing on the generator's core may run between stamping a packet and
        # sending it. Only a sender that sleeps between packets: a busy one would
        # starve the core.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    sends = [s.send for s in socks]
    n = len(sends)
    seq = [random.getrandbits(16) for _ in range(n)]
    ts = [random.getrandbits(32) for _ in range(n)]
    ssrc = [random.getrandbits(32) for _ in range(n)]
    buf = bytearray(PACKET)
    pack = STAMP.pack_into
    batch = 32
    sent = sent_meas = errors = 0
    i = 0
    tag = tags[0]
    measuring = False
    while (now := mono()) < t_start:
        time.sleep(min(0.01, (t_start - now) / 1e9))
    cpu0 = time.process_time()
    while (now := mono()) < t_end:
        if not measuring and now >= t_meas:
            measuring, tag, sent_meas = True, tags[1], 0
        if rate:
            due = int((now - t_start) * rate / 1e9) - sent
            if due <= 0:
                if sleepy:
                    wake = t_start + (sent + 1) * 1e9 / rate
                    time.sleep(max(0.0, min(0.002, (wake - now) / 1e9)))
                continue
            if due > batch:
                due = batch
        else:
            due = batch
        for _ in range(due):
            s = seq[i] = (seq[i] + 1) & 0xFFFF
            t = ts[i] = (ts[i] + 160) & 0xFFFFFFFF
            pack(buf, 0, 0x80, 0, s, t, ssrc[i], wall(), tag, first_id + i)
            try:
                sends[i](buf)
            except OSError:  # full send buffer / ICMP error: not sent
                errors += 1
            i += 1
            if i == n:
                i = 0
        sent += due
        sent_meas += due
    cpu = time.process_time() - cpu0
    out.send(
        {"sent": sent, "sent_meas": sent_meas if measuring else 0, "errors": errors, "cpu_s": cpu}
    )
    out.close()


def receiver_main(
    socks: list[socket.socket], tag: int, t_end: int, drain_s: float, core: int, out: Any
) -> None:
    """Read every phone socket until t_end + drain_s; latency of packets tagged `tag`.

    A packet's arrival is the kernel's timestamp (SO_TIMESTAMPNS), taken when the
    relay's send queued it on the phone's socket: when this process gets round to
    reading it (at the lowest priority on the sender's core) is not the relay's doing.
    """
    from array import array

    _pin(core)
    # Behind the sender on their shared core: a sender preempted between stamping a
    # packet and sending it would add the receiver's time slice to that packet.
    os.nice(19)
    ep = select.epoll()
    recv = {}
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        ep.register(s.fileno(), select.EPOLLIN)
        recv[s.fileno()] = s.recvmsg_into
    rbuf = bytearray(4096)
    buffers = [rbuf]
    ancillary = socket.CMSG_SPACE(ARRIVAL.size)
    unpack = TAIL.unpack_from
    arrival = ARRIVAL.unpack_from
    lat = array("q")
    sent_at = array("q")
    got = other = 0
    stop_at = t_end + int(drain_s * 1e9)
    while mono() < stop_at:
        for fd, _ in ep.poll(0.05):
            rcv = recv[fd]
            for _ in range(256):
                try:
                    n, cmsgs, _flags, _addr = rcv(buffers, ancillary)
                except OSError:
                    break
                if n == PACKET and cmsgs:
                    sent_ns, t = unpack(rbuf, 12)
                    if t == tag:
                        sec, nsec = arrival(cmsgs[0][2])
                        got += 1
                        sent_at.append(sent_ns)
                        lat.append(sec * 1_000_000_000 + nsec - sent_ns)
                        continue
                other += 1
    ordered = sorted(lat)
    seconds = p99_by_second(sent_at, lat)

    def q(p: float) -> float | None:
        return round(percentile(ordered, p) / 1000, 1) if ordered else None

    out.send(
        {"received": got, "other": other, "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999),
         "max_us": round(ordered[-1] / 1000, 1) if ordered else None,
         "seconds_p99_over_1ms": f"{sum(x > 1_000_000 for x in seconds)}/{len(seconds)}"}
    )  # fmt: skip
    out.close()


def p99_by_second(sent_at: Any, lat: Any) -> list[int]:
    """Each whole second's p99 (ns), by send time: a run's p99 may come from a few bad
    seconds (a slow spell of a shared VM) or from every second (the relay)."""
    start = min(sent_at, default=0)
    by_second: dict[int, list[int]] = {}
    for sent, latency in zip(sent_at, lat, strict=True):
        by_second.setdefault((sent - start) // 1_000_000_000, []).append(latency)
    whole = range(max(by_second, default=0))  # the last second is cut short
    return [percentile(sorted(by_second[i]), 0.99) for i in whole if i in by_second]


def percentile(ordered: Any, p: float) -> int:
    """The value at fraction `p` of a sorted, non-empty sequence."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Phones:
    """The 2 x calls phone sockets (caller, callee per call), made once, reused by every step."""

    def __init__(self, ports: range) -> None:
        self.socks: list[socket.socket] = []
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            set_buffers(s, PHONE_BUFFER, PHONE_BUFFER)
            s.bind((HOST, port))
            s.setblocking(False)
            self.socks.append(s)
        self.ports = {s.getsockname()[1] for s in self.socks}

    def pairs(self) -> list[tuple[int, int]]:
        p = [s.getsockname()[1] for s in self.socks]
        return list(zip(p[::2], p[1::2], strict=True))

    def connect(self, targets: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
        for i, (caller_to, callee_to) in enumerate(targets):
            self.socks[2 * i].connect(caller_to)
            self.socks[2 * i + 1].connect(callee_to)

    def connect_direct(self) -> None:
        """No relay: each phone talks to its peer (the generator's own ceiling)."""
        p = self.socks
        for i in range(0, len(p), 2):
            p[i].connect(p[i + 1].getsockname())
            p[i + 1].connect(p[i].getsockname())

    def receive_buffer(self, size: int) -> None:
        for s in self.socks:
            set_buffers(s, size)

    def prime(self) -> int:
        """A few packets from every phone so the relay latches each one; then drain."""
        pkt = STAMP.pack(0x80, 0, 1, 160, 1, 0, 0, 0) + bytes(PACKET - STAMP.size)
        for _ in range(3):
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.send(pkt)
            time.sleep(0.05)
        time.sleep(0.3)
        return drain(self.socks)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def run_step(
    phones: Phones,
    relay_pid: int,
    relay_ports: range,
    rate: float,
    seconds: float,
    warmup: float,
    mode: str,
    senders: int,
    core: int,
    step_no: int,
    during: Callable[[int], dict] | None = None,
) -> dict:
    """One measured step: `mode` "drop" (kernel counts forwarded packets) or "recv" (latency).

    `during(t_end)`, if given, runs in this process in the measured window (signalling).
    """
    ctx = mp.get_context("fork")
    tags = ((2 * step_no + 1) & 0xFF, (2 * step_no + 2) & 0xFF)
    socks = phones.socks
    if mode == "drop":
        phones.receive_buffer(1)  # the kernel's minimum: forwarded packets become drops
        warmup = 0  # every packet counts (the relay is fresh and primed)
    drain(socks)
    t_start = mono() + 300_000_000
    t_meas = t_start + int(warmup * 1e9)
    t_end = t_meas + int(seconds * 1e9)
    sleepy = mode == "recv" or during is not None  # leave core 1 to the receiver / signalling
    procs, pipes = [], []
    k = max(1, senders)
    for j in range(k):
        mine = socks[j::k]
        r, w = ctx.Pipe(duplex=False)
        args = (mine, j, rate / k, t_start, t_meas, t_end, tags, sleepy, core, w)
        procs.append(ctx.Process(target=sender_main, args=args, daemon=True))
        pipes.append(r)
    if mode == "recv":
        r, w = ctx.Pipe(duplex=False)
        procs.append(
            ctx.Process(
                target=receiver_main, args=(socks, tags[1], t_end, 0.5, core, w), daemon=True
            )
        )
        pipes.append(r)
    for p in procs:
        p.start()
    # Drop mode counts from before the first packet; recv mode's window is tagged, the
    # snapshots there only time the relay's CPU.
    while (now := mono()) < t_meas - 50_000_000:
        time.sleep(min(0.05, (t_meas - 50_000_000 - now) / 1e9))
    snap0 = (mono(), proc_ticks(relay_pid), core_ticks(), udp_drops(phones.ports, relay_ports))
    while (now := mono()) < t_meas:
        time.sleep((t_meas - now) / 1e9)
    extra = during(t_end) if during is not None else {}
    while (now := mono()) < t_end:
        time.sleep(min(0.05, (t_end - now) / 1e9))
    snap1 = (mono(), proc_ticks(relay_pid), core_ticks(), udp_drops(phones.ports, relay_ports))
    results = []
    for r, p in zip(pipes, procs, strict=True):
        results.append(r.recv() if r.poll(seconds + warmup + 15) else {})
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(2)
    sent = sum(x.get("sent_meas", 0) for x in results[:k])
    wall = (t_end - t_meas) / 1e9  # the senders' schedule (they stop at t_end)
    cpu_s = sum(x.get("cpu_s", 0.0) for x in results[:k])
    row: dict[str, Any] = {"mode": mode, "rate": rate or "max", "sent": sent}
    late = 0
    if mode == "drop":
        time.sleep(0.5)  # the relay's backlog at t_end: forwarded late, not lost
        late = udp_drops(phones.ports, relay_ports)[0] - snap1[3][0]
        queued = drain(socks)  # what sat in the tiny buffers: forwarded too (arrived early)
        forwarded = snap1[3][0] - snap0[3][0] + queued
        phones.receive_buffer(PHONE_BUFFER)
    else:
        rx = results[-1]
        forwarded = rx.get("received", 0)
        row.update({key: rx.get(key) for key in LATENCY_KEYS})
    total = sum(x.get("sent", 0) for x in results[:k])
    snap_wall = (snap1[0] - snap0[0]) / 1e9
    row.update(
        offered_pps=round(sent / wall),
        forwarded_pps=round(forwarded / wall),
        # lost: never forwarded (not within 0.5 s of the end either)
        loss_pct=round(100 * (sent - forwarded - late) / sent, 3) if sent else None,
        forwarded_late=late,
        send_errors=sum(x.get("errors", 0) for x in results[:k]),
        relay_cpu_pct=round(100 * (snap1[1] - snap0[1]) / CLK_TCK / snap_wall, 1)
        if relay_pid
        else None,
        relay_socket_drops=snap1[3][1] - snap0[3][1],
        core_busy_pct=busy_pct(snap0[2], snap1[2]),
        # the generator's own cost: packets per second of sender CPU (its ceiling on a
        # free core), and how late the end snapshot was (backlog counted after t_end)
        gen_pps_per_cpu_s=round(total / cpu_s) if cpu_s else None,
        snapshot_late_ms=round((snap1[0] - t_end) / 1e6, 1),
    )
    row.update(extra)
    return row


# ---------------------------------------------------------------- the run


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


Step = tuple[str, float, float, bool]  # mode, rate, seconds, signalling


def ladder_plan(relay: Relay, args: argparse.Namespace, rates: list[float]) -> list[Step]:
    """The throughput ladder and (ours only) the signalling step."""
    plan: list[Step] = [("drop", r, args.seconds, False) for r in rates]
    if args.signalling_calls and isinstance(relay, Worker):
        plan.append(("drop", args.latency_rate, args.seconds, True))
    return plan


def measure_relay(
    relay: Relay, phones: Phones, args: argparse.Namespace, plan: list[Step], first_no: int
) -> list[dict]:
    """Each step of `plan` on a fresh relay; `first_no` numbers the steps (packet tags)."""
    rows = []
    for no, (mode, rate, seconds, signalling) in enumerate(plan, first_no):
        row: dict[str, Any] = {"relay": relay.name}
        try:
            t0 = time.monotonic()
            phones.connect(relay.start(phones.pairs()))
            row["setup_s"] = round(time.monotonic() - t0, 1)
            phones.prime()
            during = None
            if signalling:
                row["step"] = "signalling while relaying"
                during = functools.partial(relay.calls_during, args.signalling_calls)
            mark = relay.log_mark()
            row.update(
                run_step(phones, relay.pid, relay.ports, rate, seconds, args.warmup, mode,
                         args.senders, args.gen_core, no, during)
            )  # fmt: skip
            row.update(relay.log_events(mark))
            if relay.proc is not None and relay.proc.poll() is not None:
                row["error"] = f"relay exited with {relay.proc.returncode}"
        except Exception as exc:  # noqa: BLE001 (a failed step is reported, the run goes on)
            row.update(mode=mode, rate=rate or "max", error=f"{type(exc).__name__}: {exc}")
        finally:
            relay.stop()
        row.update(relay.info)
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        emit(row)
        rows.append(row)
    return rows


def fmt_int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v if v is not None else "-")


def _row(lines: list[str], cells: list[str]) -> None:
    lines.append("| " + " | ".join(cells) + " |")


def table(results: dict[str, list[dict]], ceiling: dict | None, rates: list[float]) -> str:
    names = list(results)
    ladder = {
        n: [r for r in results[n] if r.get("mode") == "drop" and "step" not in r] for n in names
    }
    cap = ceiling.get("offered_pps") if ceiling else None
    lines: list[str] = []
    _row(lines, ["offered pps"] + [f"{n}: fwd pps / loss % / relay CPU %" for n in names])
    lines[-1] += " ours / rtpengine |"
    lines.append("|" + "---|" * (len(names) + 2))
    for rate in rates:
        cells = [fmt_int(int(rate)) if rate else "max (unpaced)"]
        fwd = {}
        for n in names:
            row = next((r for r in ladder[n] if r.get("rate") == (rate or "max")), {})
            if "forwarded_pps" not in row:
                cells.append("error: " + str(row.get("error", "not run"))[:60])
                continue
            fwd[n] = row["forwarded_pps"]
            short = rate and row["offered_pps"] < 0.97 * rate  # the generator fell behind
            bound = (
                " (generator-bound)" if short or (cap and row["offered_pps"] >= 0.95 * cap) else ""
            )
            fwd_s = fmt_int(row["forwarded_pps"])
            cells.append(f"{fwd_s} / {row['loss_pct']} / {row['relay_cpu_pct']}{bound}")
        cells.append(_ratio(fwd))
        _row(lines, cells)
    sustained = {}
    for n in names:
        losses = [(r.get("loss_pct"), r.get("forwarded_pps", 0)) for r in ladder[n]]
        ok = [fwd for loss, fwd in losses if loss is not None and loss < LOSS_LIMIT_PCT]
        sustained[n] = max(ok) if ok else 0
    cells = [f"**sustained** (< {LOSS_LIMIT_PCT} % loss)"]
    _row(lines, cells + [fmt_int(sustained[n]) for n in names] + [_ratio(sustained)])
    lat = {n: median_latency([r for r in results[n] if r.get("mode") == "recv"]) for n in names}
    rate = fmt_int(int(args_rate)) if (args_rate := lat[names[0]].get("rate")) else "-"
    runs = max(x.get("runs", 0) for x in lat.values())
    cells = [f"**latency** p50 / p99 / p99.9 us at {rate} pps (median of {runs} runs by p99)"]
    for n in names:
        x = lat[n]
        cells.append(f"{x.get('p50_us')} / {x.get('p99_us')} / {x.get('p999_us')}")
        cells[-1] += f" (loss {x.get('loss_pct')} %; p99 of each run: {x.get('p99_runs')})"
    _row(lines, cells + [_ratio({n: lat[n].get("p99_us") for n in names}) + " (p99)"])
    lines.append("")
    for n in names:
        sig = next((r for r in results[n] if r.get("step")), None)
        idle = next(
            (r.get("setup_calls_per_s") for r in results[n] if "setup_calls_per_s" in r), None
        )
        if sig:
            lines.append(
                f"- {n}, signalling while relaying {fmt_int(sig.get('rate'))} pps: call setup "
                f"{sig.get('setup_calls_per_s_while_relaying')} calls/s one at a time "
                f"(idle relay: {idle}), relay loss {sig.get('loss_pct')} %."
            )
        engine = next((r.get("engine") for r in results[n] if r.get("engine")), None)
        if engine:
            lines.append(f"- {n}: {engine} engine, worker process set up by real SIP calls.")
    if ceiling:
        base = ceiling.get("baseline", {})
        lines.append(
            f"- generator alone (phones to phones, no relay): {fmt_int(cap)} pps offered unpaced; "
            f"latency p50 / p99 {base.get('p50_us')} / {base.get('p99_us')} us at "
            f"{fmt_int(base.get('rate'))} pps. Steps offering < 97 % of their rate, or >= 95 % "
            "of the ceiling, are marked generator-bound."
        )
    return "\n".join(lines)


def median_latency(rows: list[dict]) -> dict:
    """The latency run with the median p99 (the machine's own hiccups vary from run to run)."""
    runs = [r for r in rows if r.get("p99_us") is not None]
    if not runs:
        return {}
    return {
        **sorted(runs, key=lambda r: r["p99_us"])[(len(runs) - 1) // 2],
        "runs": len(runs),
        "p99_runs": ", ".join(
            f"{r['p99_us']} ({r.get('seconds_p99_over_1ms')} s over 1 ms)" for r in runs
        ),
    }


def _ratio(values: dict[str, Any]) -> str:
    ours = next((v for n, v in values.items() if n.startswith("ours")), None)
    theirs = values.get("rtpengine")
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument(
        "--rates",
        default="20000,50000,100000,150000,200000,max",
        help="aggregate packets/s of the throughput ladder ('max': unpaced)",
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per ladder step")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--latency-rate", type=float, default=20000)
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument(
        "--latency-runs", type=int, default=3, help="latency steps per relay (median reported)"
    )
    ap.add_argument("--relays", default="rtpengine,ours", help="which relays, in this order")
    ap.add_argument("--senders", type=int, default=1, help="sender processes (all on --gen-core)")
    ap.add_argument("--relay-core", type=int, default=0)
    ap.add_argument("--gen-core", type=int, default=1)
    ap.add_argument("--no-ceiling", action="store_true", help="skip the generator-only steps")
    ap.add_argument(
        "--signalling-calls",
        type=int,
        default=50,
        help="ours: calls set up while relaying --latency-rate (0: skip the step)",
    )
    ap.add_argument(
        "--out", default="", help="directory for logs and results.md (default: a temp dir)"
    )
    args = ap.parse_args()  # fmt: skip
    rates = [0.0 if r.strip() == "max" else float(r) for r in args.rates.split(",") if r.strip()]
    workdir = Path(args.out or tempfile.mkdtemp(prefix="media_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    _pin(args.gen_core)  # this process (signalling, ng) and the generator children
    print(
        f"# output dir {workdir}; {args.calls} calls = {2 * args.calls} streams, {PACKET}-byte "
        f"packets; relay on core {args.relay_core}, generator on core {args.gen_core}; "
        f"load average {os.getloadavg()}",
        flush=True,
    )
    # One block below the ephemeral range for all: phones, each relay's media ports, and
    # the signalling step's SDP ports (nothing sends from those).
    sizes = {
        "phones": 2 * args.calls,
        "rtpengine": 4 * args.calls + 100,
        "worker": 4 * (args.calls + args.signalling_calls) + 100,
        "dead": 2 * args.signalling_calls,
    }
    first = free_block(sum(sizes.values()))
    args.blocks = {}
    for name, size in sizes.items():
        args.blocks[name] = range(first, first + size)
        first += size + size % 2  # keep every block's first port even
    phones = Phones(args.blocks["phones"])
    results: dict[str, list[dict]] = {}
    ceiling = None
    relays: list[Relay] = []
    try:
        if not args.no_ceiling:
            phones.connect_direct()
            ceiling = run_step(phones, 0, range(0), 0, min(args.seconds, 3), 0.5, "drop",
                               args.senders, args.gen_core, 99)  # fmt: skip
            ceiling["relay"] = "none (generator ceiling)"
            emit(ceiling)
            seconds = min(args.latency_seconds, 3)
            baseline = run_step(phones, 0, range(0), args.latency_rate, seconds, 0.5, "recv",
                                args.senders, args.gen_core, 98)  # fmt: skip
            baseline["relay"] = "none (generator latency, phone to phone)"
            emit(baseline)
            ceiling["baseline"] = baseline
        for which in args.relays.split(","):
            relays.append((Rtpengine if which.strip() == "rtpengine" else Worker)(args, workdir))
            results[relays[-1].name] = []
        # Latency runs take turns between the relays: a slow spell of the shared VM
        # (minutes long, at times) then falls on both rather than on one.
        latency: list[Step] = [("recv", args.latency_rate, args.latency_seconds, False)]
        for run in range(args.latency_runs):
            for relay in relays:
                results[relay.name] += measure_relay(relay, phones, args, latency, run)
        for relay in relays:
            plan = ladder_plan(relay, args, rates)
            results[relay.name] += measure_relay(relay, phones, args, plan, args.latency_runs)
            relay.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for relay in relays:
            relay.close()
        phones.close()
    text = table(results, ceiling, rates) if results else ""
    print()
    print(text)
    (workdir / "results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
