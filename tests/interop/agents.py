"""Real SIP clients as test agents: linphonec, pjsua2 and baresip, each driven its own way.

Every agent takes the same commands (`dial`, `answer`, `hold`, `resume`, `hangup`)
and answers the same questions, from what its client reports:
- `ringing()`, `ended()`: a call came in; the call is over;
- `holding_since(t)`: our hold offer was answered after time `t` (`time.time()`);
  `held_since(t)` / `resumed_since(t)`: the far end put us on hold / took us off it;
- `receiving_since(t)`: RTP kept arriving after `t` (two agents that both
  receive prove media flows both ways);
- `totals()`: RTP packets received and sent over the whole call, once it ended.

SIPp is no agent: its scenarios run a whole call (see test_calls.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import redis

from sipnodes.engine.location import location_key
from tests.sipnodes.engine.baresip import BARESIP_CONFIG, ctrl, spaced_port
from tests.sipnodes.engine.processes import WorkerProcess
from tests.support import ROOT, free_port, require_tool, stop_process, wait_for

FLOW = 25  # RTP packets (half a second of 20 ms frames) that show media is flowing
PJSUA_AGENT = Path(__file__).with_name("pjsua_agent.py")


class Rtp(NamedTuple):
    received: int
    sent: int


class Report(NamedTuple):
    """Something a client said, and when (`time.time()`) it said it."""

    at: float
    data: Any


def binding(client: redis.Redis, worker: WorkerProcess, number: str) -> dict[str, Any] | None:
    """The worker's location record of `number` in Redis (its registration), if any."""
    found = bindings(client, worker, number)
    return found[0] if found else None


def bindings(client: redis.Redis, worker: WorkerProcess, number: str) -> list[dict[str, Any]]:
    """The worker's location records of `number` in Redis: one per registered device."""
    return [
        dict(json.loads(record))
        for field, record in client.hgetall(location_key(worker.server_uid)).items()
        if field.decode().split(" ", 1)[0] == number
    ]


def write_tone(path: Path, seconds: int = 3) -> Path:
    """A 440 Hz tone, 8 kHz mono: the audio linphone and pjsua send (they loop it)."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
        for i in range(8000 * seconds)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames)
    return path


def collect(stream: IO[bytes], reports: list[Report], parse: Any) -> None:
    """Append each line of `stream`, parsed, with its arrival time (run in a thread)."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\r\n")
        reports.append(Report(time.time(), parse(line)))


def grew(before: int, after: int) -> int:
    """Packets counted between two reports; a count that restarted (new SSRC) counts from 0."""
    return after - before if after >= before else after


class Client:
    """What every agent shares: a number at the worker on `server_port`, its own directory
    and ports, a process and its log."""

    kind = ""

    def __init__(self, tmp: Path, number: str, transport: str, server_port: int) -> None:
        self.number = number
        self.password = f"pw{number}"
        self.transport = transport
        self.server_port = server_port
        self.dir, n = tmp / f"{self.kind}-{number}", 1
        while self.dir.exists():  # a second device of the same kind and number
            n += 1
            self.dir = tmp / f"{self.kind}-{number}-{n}"
        self.dir.mkdir()
        self.log_path = self.dir / f"{self.kind}.log"
        self.sip_port = spaced_port()
        self.rtp_port = spaced_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __str__(self) -> str:
        return f"{self.kind}/{self.transport} ({self.number})"

    def uri(self, number: str) -> str:
        return f"sip:{number}@127.0.0.1:{self.server_port};transport={self.transport}"

    def send(self, command: str) -> None:
        """One command line on the client's stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        """The client's own log (failure messages show its tail)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Linphone(Client):
    """`linphonec` reading commands on stdin; its log (`-d 6`) carries the RTP figures.

    linphonec reports RTP packet counts only when a stream stops (hold, resume,
    hang-up); while a stream runs its log says each second how many kbit/s come in.
    """

    kind = "linphone"
    BANDWIDTH = re.compile(r"RTP : \[d=([\d.]+),u=([\d.]+)\]")
    STATS = re.compile(r"ortp-message-(sent|received) +(\d+) packets")

    def start(self) -> Linphone:
        binary = require_tool("linphonec", "linphone-cli")
        home = self.dir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True)  # or its core never starts
        ports = (self.sip_port, -1) if self.transport == "udp" else (-1, self.sip_port)
        rc = self.dir / "linphonerc"
        server = f"127.0.0.1:{self.server_port}"
        rc.write_text(
            f"[sip]\nsip_port={ports[0]}\nsip_tcp_port={ports[1]}\ndefault_proxy=0\n"
            f"[rtp]\naudio_rtp_port={self.rtp_port}\n"
            f"[proxy_0]\nreg_proxy=<sip:{server};transport={self.transport}>\n"
            f'reg_identity="Linphone {self.number}" <sip:{self.number}@{server}>\n'
            "reg_expires=600\nreg_sendregister=1\npublish=0\n"
            f"[auth_info_0]\nusername={self.number}\npasswd={self.password}\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(rc), "-d", "6", "-l", str(self.log_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        self.lines: list[Report] = []
        threading.Thread(
            target=collect, args=(self.proc.stdout, self.lines, str), daemon=True
        ).start()
        self.send("soundcard use files")
        self.send(f"play {write_tone(self.dir / 'tone.wav')}")
        return self

    def said_since(self, text: str, t: float = 0.0) -> bool:
        return any(text in r.data for r in self.lines if r.at >= t)

    def dial(self, number: str) -> None:
        self.send(f"call {self.uri(number)}")

    def ringing(self) -> bool:
        return self.said_since("Receiving new incoming call")

    def answer(self) -> None:
        self.send("answer")

    def hold(self) -> None:
        self.send("pause")

    def resume(self) -> None:
        self.send("resume")

    def hangup(self) -> None:
        self.send("terminate")

    def ended(self) -> bool:
        return self.said_since(" ended (")

    def holding_since(self, t: float) -> bool:
        return self.said_since("is now paused", t)

    def held_since(self, t: float) -> bool:
        return self.said_since("has been paused by", t)

    def resumed_since(self, t: float) -> bool:
        return self.said_since("Media streams established", t)

    def receiving_since(self, t: float) -> bool:
        """A bandwidth line stamped a second after `t` or later shows RTP coming in."""
        return any(kbps > 0 for at, kbps in self._incoming_kbps() if at >= t + 1.0)

    def _incoming_kbps(self) -> list[tuple[float, float]]:
        """(time, kbit/s received) of each bandwidth line; the line above it has the time."""
        rates, stamp = [], 0.0
        for line in self.log().splitlines():
            if line[:2] == "20":
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S:%f").timestamp()
            elif match := self.BANDWIDTH.search(line):
                rates.append((stamp, float(match[1])))
        return rates

    def totals(self) -> Rtp | None:
        """The last `RTP STATISTICS` block, which comes just before the call's End state."""
        log = self.log()
        if "to LinphoneCallEnd" not in log:
            return None
        counts = dict(self.STATS.findall(log))
        return Rtp(received=int(counts["received"]), sent=int(counts["sent"]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.send("quit")
        super().stop()


class Pjsua(Client):
    """pjsua2 in its own process (pjsua_agent.py), JSON events on its stdout."""

    kind = "pjsua"

    def start(self) -> Pjsua:
        args = [self.server_port, self.transport, self.number, self.password, self.sip_port]
        args += [self.rtp_port, write_tone(self.dir / "tone.wav"), self.log_path]
        self.proc = subprocess.Popen(
            [sys.executable, str(PJSUA_AGENT), *map(str, args)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.events: list[Report] = []
        threading.Thread(
            target=collect, args=(self.proc.stdout, self.events, json.loads), daemon=True
        ).start()
        return self

    def seen(self, event: str, t: float = 0.0, **fields: Any) -> list[dict[str, Any]]:
        return [
            r.data
            for r in self.events
            if r.at >= t and r.data["event"] == event and r.data.items() >= fields.items()
        ]

    def dial(self, number: str) -> None:
        self.send(f"dial {number}")

    def ringing(self) -> bool:
        return bool(self.seen("incoming"))

    def answer(self) -> None:
        self.send("answer")

    def hold(self) -> None:
        self.send("hold")

    def resume(self) -> None:
        self.send("resume")

    def hangup(self) -> None:
        self.send("hangup")

    def ended(self) -> bool:
        return bool(self.seen("state", state="DISCONNECTED"))

    def holding_since(self, t: float) -> bool:
        return bool(self.seen("media", t, status="LOCAL_HOLD"))

    def held_since(self, t: float) -> bool:
        return bool(self.seen("media", t, status="REMOTE_HOLD"))

    def resumed_since(self, t: float) -> bool:
        return bool(self.seen("media", t, status="ACTIVE"))

    def rtp(self) -> Rtp:
        """Ask for the call's counts now and wait for the answer."""
        count = len(self.seen("stats"))
        self.send("stats")
        wait_for(lambda: len(self.seen("stats")) > count, 5, f"{self} to report RTP")
        last = self.seen("stats")[-1]
        return Rtp(received=last["rx"], sent=last["tx"])

    def receiving_since(self, t: float) -> bool:
        self.rtp()
        counts = [s["rx"] for s in self.seen("stats", t)]
        return len(counts) >= 2 and counts[-1] - counts[0] >= FLOW

    def totals(self) -> Rtp | None:
        return self.rtp()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.send("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)  # a clean libDestroy(); stop_process() kills it otherwise
        super().stop()

    # ---- several calls in one process, and transfer (pjsua_agent.py numbers the calls) ----

    def hold_call(self, index: int) -> None:
        self.send(f"hold {index}")

    def hangup_call(self, index: int) -> None:
        self.send(f"hangup {index}")

    def call_ended(self, index: int) -> bool:
        """Call number `index` (0 the first one made or taken) is over."""
        return bool(self.seen("state", call=index, state="DISCONNECTED"))

    def call_confirmed(self, index: int) -> bool:
        """Call number `index` was answered (its INVITE session is confirmed)."""
        return bool(self.seen("state", call=index, state="CONFIRMED"))

    def xfer(self, number: str, index: int | None = None) -> None:
        """Blind transfer: REFER the call (the latest by default) to `number` at the server."""
        self.send(f"xfer {number}" + ("" if index is None else f" {index}"))

    def xfer_replaces(self, index: int, other: int) -> None:
        """Attended transfer: REFER call `index`'s party to call `other`'s, with Replaces."""
        self.send(f"xfer_replaces {index} {other}")

    def transfer_reports(self, index: int | None = None) -> list[tuple[int, bool]]:
        """(status code, final) of each NOTIFY the transfer's REFER brought, in order."""
        found = self.seen("transfer") if index is None else self.seen("transfer", call=index)
        return [(e["code"], e["final"]) for e in found]


class Baresip(Client):
    """baresip driven through `ctrl_tcp` (one connection: a second one starves the first).

    Its RTP figures: `CALL_RTCP` events every few seconds (`rx.sent` counts the
    packets received from the current remote source), and a summary printed
    at hang-up (`rtp_stats yes`). baresip 1.0 reports no remote hold as such;
    what it reports is the re-INVITE's offer (`CALL_REMOTE_SDP`).
    """

    kind = "baresip"
    sock: socket.socket | None = None
    reader: threading.Thread | None = None
    sip_trace = False  # set before start(): `-s`, every SIP message in and out goes to its log
    SUMMARY = re.compile(r"^packets: +(\d+) +(\d+)", re.M)

    def start(self) -> Baresip:
        binary = require_tool("baresip", "baresip-core")
        ctrl_port = free_port()
        config = BARESIP_CONFIG.format(
            sip_port=self.sip_port,
            ctrl_port=ctrl_port,
            rtp=self.rtp_port,
            rtp_end=self.rtp_port + 9,
        )
        (self.dir / "config").write_text(config + "rtp_stats yes\n")
        (self.dir / "accounts").write_text(
            f'"Baresip {self.number}" <sip:{self.number}@127.0.0.1:{self.server_port};'
            f"transport={self.transport}>;auth_pass={self.password};regint=600;"
            "answermode=manual\n"
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", str(self.dir), *(["-s"] if self.sip_trace else [])],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.events: list[Report] = []
        self.sock = self._connect(ctrl_port)
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()
        return self

    def _connect(self, port: int) -> socket.socket:
        sock: list[socket.socket] = []

        def connected() -> bool:
            try:
                sock.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except OSError:
                return False
            return True

        wait_for(connected, 10, f"{self}'s ctrl_tcp on port {port}")
        sock[0].settimeout(None)
        return sock[0]

    def _collect(self) -> None:
        """Netstrings of JSON (`LEN:{...},`): keep the events, with their arrival times."""
        buffer = b""
        assert self.sock is not None
        while chunk := self.sock.recv(65536):
            buffer += chunk
            while b":" in buffer:
                length, rest = buffer.split(b":", 1)
                if len(rest) <= int(length):
                    break
                message, buffer = json.loads(rest[: int(length)]), rest[int(length) + 1 :]
                if message.get("event"):
                    self.events.append(Report(time.time(), message))

    def command(self, name: str, params: str = "") -> None:
        assert self.sock is not None
        ctrl(self.sock, name, params)

    def seen(self, type_: str, t: float = 0.0) -> list[dict[str, Any]]:
        return [r.data for r in self.events if r.at >= t and r.data["type"] == type_]

    def dial(self, number: str) -> None:
        self.command("dial", self.uri(number))

    def ringing(self) -> bool:
        return bool(self.seen("CALL_INCOMING"))

    def answer(self) -> None:
        self.command("accept")

    def hold(self) -> None:
        self.command("hold")

    def resume(self) -> None:
        self.command("resume")

    def hangup(self) -> None:
        self.command("hangup")

    def ended(self) -> bool:
        return bool(self.seen("CALL_CLOSED"))

    def holding_since(self, t: float) -> bool:
        return any(e["param"] == "answer" for e in self.seen("CALL_REMOTE_SDP", t))

    def held_since(self, t: float) -> bool:
        return any(e["param"] == "offer" for e in self.seen("CALL_REMOTE_SDP", t))

    resumed_since = held_since

    def receiving_since(self, t: float) -> bool:
        """Two RTCP reports after `t`, the later counting FLOW more packets received."""
        counts = [e["rtcp_stats"]["rx"]["sent"] for e in self.seen("CALL_RTCP", t)]
        return len(counts) >= 2 and grew(counts[-2], counts[-1]) >= FLOW

    def totals(self) -> Rtp | None:
        match = self.SUMMARY.search(self.log())
        return Rtp(received=int(match[2]), sent=int(match[1])) if match else None

    def stop(self) -> None:
        super().stop()  # first: baresip closing the connection ends the reading thread
        if self.reader is not None:
            self.reader.join(5)  # closing the socket under its recv() would raise EBADF there
        if self.sock is not None:
            self.sock.close()

    def transfer(self, number: str) -> None:
        """Blind transfer of the current call to `number`: the menu module's `transfer <uri>`.

        baresip 1.0 (Debian 12) can only start a blind transfer: it has no command
        that sends a REFER with `Replaces`, so it cannot be the transferor of an
        attended transfer. In the attended tests pjsua2 transfers, and baresip takes
        part as the transferred party and the transfer target (docs/interop.md).
        """
        self.command("transfer", self.uri(number))


Agent = Linphone | Pjsua | Baresip
AGENTS: dict[str, type[Agent]] = {
    "linphone": Linphone,
    "pjsua": Pjsua,
    "baresip": Baresip,
}
