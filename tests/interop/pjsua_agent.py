"""A pjsua2 phone in its own process, driven by lines on stdin; it reports JSON lines on stdout.

pjsua2 keeps one global endpoint with native threads and prints from C, so it
stays out of the pytest process: `agents.Pjsua` starts this script. All
callbacks run on the main thread (`mainThreadOnly`, no worker threads), which
polls pjsua and executes the commands a reader thread queues:
`dial NUMBER`, `answer`, `hold`, `resume`, `hangup`, `stats`, `quit`.

One process holds several calls, numbered 0, 1, ... in the order they were made
or came in. `answer`, `hold`, `resume`, `hangup` and `stats` take a call's
number as an optional argument (`hold 0`); without it they act on the latest
call, so a single-call test never names one. Transfer (RFC 3515):
`xfer NUMBER [I]` refers call I (the latest by default) to NUMBER at the server
(blind); `xfer_replaces I J` refers call I's party to call J's, with `Replaces`
(attended).

Events: `registered` (code), `incoming` (`remote`: the From), `state` (the INVITE
session's state name, and the last status code and reason phrase), `media` (ACTIVE,
LOCAL_HOLD, REMOTE_HOLD, NONE), `stats` (RTP packets received and sent in the call
so far), `transfer` (the sipfrag status line of a NOTIFY about our REFER: `code`,
`reason`, `final`), `error`. Every event about a call carries its number (`call`).
pjsip's own output goes to LOG and LOG.out.

Usage: pjsua_agent.py SERVER_PORT TRANSPORT NUMBER PASSWORD SIP_PORT RTP_PORT WAV LOG
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from typing import Any

import pjsua2 as pj

MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "NONE",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
    pj.PJSUA_CALL_MEDIA_ERROR: "ERROR",
}
TRANSPORTS = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP}


class Reporter:
    """Writes events to the original stdout; fd 1 itself goes to the log (pjsip prints there)."""

    def __init__(self, log_path: str) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        log_fd = os.open(log_path + ".out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)

    def event(self, name: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": name, **fields}) + "\n")


class Phone(pj.Account):
    """The account, its calls (oldest first) and the WAV player that feeds them."""

    def __init__(self, reporter: Reporter, wav: str) -> None:
        super().__init__()
        self.reporter = reporter
        self.wav = wav
        self.calls: list[Call] = []
        self.player: pj.AudioMediaPlayer | None = None

    @property
    def call(self) -> Call | None:
        """The latest call: the one a command without a call number acts on."""
        return self.calls[-1] if self.calls else None

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.reporter.event("registered", code=prm.code)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = self.new_call(Call(self, prm.callId))
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)
        info = call.getInfo()
        call.event("incoming", remote=info.remoteUri)

    def new_call(self, call: Call) -> Call:
        self.calls.append(call)
        return call

    def report_stats(self, call: Call | None) -> None:
        """RTP packets of the whole call (or the last one) so far."""
        if call is None:
            self.reporter.event("stats", rx=0, tx=0)
            return
        rx, tx = call.stream_packets()
        call.event("stats", rx=call.closed_rx + rx, tx=call.closed_tx + tx)

    def play_into(self, media: pj.AudioMedia) -> None:
        if self.player is None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.wav)
        self.player.startTransmit(media)


class Call(pj.Call):
    def __init__(self, phone: Phone, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(phone, call_id)
        self.phone = phone
        self.closed_rx = 0  # RTP packets of the streams already destroyed
        self.closed_tx = 0

    def event(self, name: str, **fields: Any) -> None:
        """An event about this call, with its number."""
        self.phone.reporter.event(name, call=self.phone.calls.index(self), **fields)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        self.event("state", state=info.stateText, code=info.lastStatusCode, reason=info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()  # kept: `media` points into it (SWIG)
        media = info.media
        status = MEDIA_STATUS[media[0].status] if media else "NONE"
        self.event("media", status=status)
        if status in ("ACTIVE", "REMOTE_HOLD"):
            self.phone.play_into(self.getAudioMedia(0))

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        """A NOTIFY about our REFER: the transfer's progress, as the status line it carries."""
        self.event("transfer", code=prm.statusCode, reason=prm.reason, final=prm.finalNotify)

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        """pjsua makes a new stream for every re-INVITE: keep the counts of the old one."""
        rx, tx = self.stream_packets()
        self.closed_rx += rx
        self.closed_tx += tx

    def stream_packets(self) -> tuple[int, int]:
        """RTP packets received and sent by the current stream (none between streams)."""
        try:
            stat = self.getStreamStat(0)
        except pj.Error:
            return 0, 0
        rtcp = stat.rtcp
        return rtcp.rxStat.pkt, rtcp.txStat.pkt


def start(args: list[str], reporter: Reporter) -> tuple[pj.Endpoint, Phone, str]:
    """The endpoint, registering phone and dial suffix from the command line."""
    server_port, transport, number, password, sip_port, rtp_port, wav, log = args
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.medConfig.noVad = True
    cfg.logConfig.filename = log
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = "127.0.0.1"
    tcfg.port = int(sip_port)
    transport_id = ep.transportCreate(TRANSPORTS[transport], tcfg)
    ep.libStart()

    server = f"127.0.0.1:{server_port};transport={transport}"
    acfg = pj.AccountConfig()
    acfg.idUri = f'"Pjsua {number}" <sip:{number}@127.0.0.1:{server_port}>'
    acfg.regConfig.registrarUri = f"sip:{server}"
    acfg.regConfig.timeoutSec = 600
    acfg.sipConfig.transportId = transport_id
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", number, 0, password))
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.port = int(rtp_port)
    acfg.mediaConfig.transportConfig.portRange = 10
    phone = Phone(reporter, wav)
    phone.create(acfg)
    return ep, phone, server


def execute(command: str, phone: Phone, server: str) -> None:
    verb, *args = command.split()
    prm = pj.CallOpParam(True)
    if verb == "dial":
        phone.new_call(Call(phone)).makeCall(f"sip:{args[0]}@{server}", prm)
        return
    if verb == "xfer_replaces":
        first, second = pick(phone, args[0]), pick(phone, args[1])
        if first is not None and second is not None:
            first.xferReplaces(second, prm)
        return
    index = args[1:2] if verb == "xfer" else args[:1]  # the call's number, when given
    if verb == "stats":
        phone.report_stats(pick(phone, *index) if phone.calls else None)
        return
    call = pick(phone, *index)
    if call is None:
        return
    if verb == "answer":
        prm.statusCode = 200
        call.answer(prm)
    elif verb == "hold":
        call.setHold(prm)
    elif verb == "resume":
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(prm)
    elif verb == "hangup":
        call.hangup(prm)
    elif verb == "xfer":
        call.xfer(f"sip:{args[0]}@{server}", prm)
    else:
        phone.reporter.event("error", message=f"{command}: unknown command")


def pick(phone: Phone, index: str | None = None) -> Call | None:
    """Call number `index`, or the latest call; an `error` event if there is no such call."""
    try:
        return phone.calls[int(index)] if index is not None else phone.calls[-1]
    except (IndexError, ValueError):
        phone.reporter.event("error", message=f"no call {index or ''}".strip())
        return None


def read_commands(commands: queue.Queue[str]) -> None:
    """Queue stdin's lines for the main thread; end of input means quit."""
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("quit")


def main() -> None:
    reporter = Reporter(sys.argv[8])
    ep, phone, server = start(sys.argv[1:], reporter)
    commands: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    while True:
        ep.libHandleEvents(20)
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command == "quit":
            break
        try:
            execute(command, phone, server)
        except pj.Error as error:
            reporter.event("error", message=f"{command}: {error.info()}")
    phone.calls.clear()  # a Call deleted after libDestroy() trips an assertion in pjsua
    phone.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    main()
