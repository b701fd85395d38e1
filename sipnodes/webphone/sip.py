"""A web phone's SIP side without IO: one registered device of a local user and its call.

The gateway is a phone like any other to the server's worker: it REGISTERs as the local
user (digest from the user's HA1 in the worker's config: the gateway never sees a
password), places INVITEs (answering the 407 once), takes INVITEs (180, then 200 when the
page answers), ends calls with BYE or CANCEL and holds with a re-INVITE (`a=sendonly`).
Messages, transactions and digests are the engine's (`sipnodes.engine`); this module only
adds a user agent's dialog logic on top. Messages and time go in; the transaction layer's
outbox and `Phone.events` come out. One call at a time per phone: a second INVITE gets 486.

The worker is a B2BUA that records no route, so dialogs have no route set.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from sipnodes.engine.digest import authorization_from_ha1
from sipnodes.engine.message import RemoteProtocolError, Request, Response, Uri, Via, parse
from sipnodes.engine.sipmsg import (
    Peer,
    Send,
    make_request,
    make_response,
    new_branch,
    random_token,
)
from sipnodes.engine.timers import Scheduler, Timer
from sipnodes.engine.transaction import ClientTransaction, ServerTransaction, TransactionLayer

REGISTER_EXPIRES = 300
REFRESH_SHARE = 0.8
# RFC 3326 allows any token as a Reason's protocol: this one tells the worker that the web
# phone's page went away, so the CDR gets callTag WEB_PHONE_CLOSED (sipnodes/engine/cdr.py).
CLOSED_REASON = 'sipcloud;cause=1;text="web phone closed"'
PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}  # what the SIP side offers and accepts
VP8 = "VP8/90000"
VIDEO_PT = 96  # the dynamic payload type we offer VP8 with


class CallState(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"  # our INVITE is out
    RINGING = "ringing"  # the callee rings (180/183)
    INCOMING = "incoming"  # an INVITE rings here, the page has not answered
    ANSWERED = "answered"
    ENDED = "ended"


@dataclasses.dataclass(frozen=True)
class Registered:
    """The outcome of a REGISTER: ok, or the worker's answer (e.g. the edition's limit)."""

    ok: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class CallChanged:
    """What the page shows: the call's state, the other party, why it ended, hold."""

    state: CallState
    peer: str = ""
    reason: str = ""
    held: bool = False


@dataclasses.dataclass(frozen=True)
class MediaChanged:
    """Where the bridge sends a kind's RTP (None: nowhere), with which payload type, and
    whether (not while either side holds)."""

    kind: str
    remote: tuple[str, int] | None
    payload_type: int = 0
    sending: bool = True


Event = Registered | CallChanged | MediaChanged


@dataclasses.dataclass(frozen=True)
class Stream:
    """One m= section of the peer's SDP, as far as a web phone needs it."""

    kind: str
    address: str
    port: int
    proto: str
    formats: tuple[str, ...]
    payload_type: int | None  # the codec both sides have (G.711, VP8); None: none
    direction: str

    @property
    def usable(self) -> bool:
        return self.payload_type is not None and self.port > 0

    @property
    def wants_ours(self) -> bool:
        """Whether the peer takes our media (not on hold, RFC 3264 §8.4 / RFC 2543)."""
        return self.direction in ("sendrecv", "recvonly") and self.address not in ("0.0.0.0", "::")


def streams(body: bytes) -> list[Stream]:
    """The m= sections of an SDP body, in order; the usable codec of each found by rtpmap
    (VP8 has a dynamic payload type) or by the static G.711 numbers."""
    address, sections = "", []
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) >= 4 and parts[1].isdigit():
                sections.append({"m": parts, "c": "", "rtpmap": {}, "dir": "sendrecv"})
        elif line.startswith("c="):
            if sections:
                sections[-1]["c"] = line.split()[-1]
            else:
                address = line.split()[-1]
        elif sections and line.startswith("a=rtpmap:"):
            pt, _, codec = line[9:].partition(" ")
            sections[-1]["rtpmap"][pt] = codec.strip()
        elif sections and line[2:] in _ANSWER_DIRECTION and line.startswith("a="):
            sections[-1]["dir"] = line[2:]
    return [_stream(section, address) for section in sections]


def _stream(section: dict, address: str) -> Stream:  # type: ignore[type-arg]
    kind, port, proto, *formats = section["m"]
    if kind == "audio":
        found = [int(f) for f in formats if f.isdigit() and int(f) in PAYLOAD_TYPES]
    elif kind == "video":
        found = [int(f) for f in formats if section["rtpmap"].get(f, "").upper() == VP8]
    else:
        found = []
    return Stream(
        kind,
        section["c"] or address,
        int(port),
        proto,
        tuple(formats),
        found[0] if found else None,
        section["dir"],
    )


def first(found: list[Stream], kind: str) -> Stream | None:
    """The first usable stream of a kind: the one the web phone takes."""
    return next((s for s in found if s.kind == kind and s.usable), None)


def _media_lines(kind: str, port: int, pts: tuple[int, ...], direction: str) -> list[str]:
    if kind == "video":
        codecs = [f"a=rtpmap:{pt} {VP8}" for pt in pts]
    else:
        codecs = [f"a=rtpmap:{pt} {PAYLOAD_TYPES[pt]}/8000" for pt in pts] + ["a=ptime:20"]
    return [f"m={kind} {port} RTP/AVP {' '.join(map(str, pts))}", *codecs, f"a={direction}"]


def _sdp(address: str, media: list[str]) -> bytes:
    lines = [
        "v=0",
        f"o=webphone {int(random_token(4), 16)} 1 IN IP4 {address}",
        "s=sipcloud web phone",
        f"c=IN IP4 {address}",
        "t=0 0",
        *media,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def offer_sdp(
    address: str,
    port: int,
    video_port: int = 0,
    direction: str = "sendrecv",
    pts: tuple[int, ...] = (0, 8),
    video_pt: int = VIDEO_PT,
) -> bytes:
    """Our offer towards the worker: G.711 audio, and VP8 video when the page sends video."""
    media = _media_lines("audio", port, pts, direction)
    if video_port:
        media += _media_lines("video", video_port, (video_pt,), direction)
    return _sdp(address, media)


def answer_sdp(
    address: str, port: int, video_port: int, offer: list[Stream], held: bool = False
) -> bytes:
    """Our answer to the peer's offer: one m= line per offered one, in its order (RFC 3264
    §6); the first usable audio and (if the page sends video) video taken, others refused."""
    taken = {id(first(offer, "audio")), id(first(offer, "video") if video_port else None)}
    media: list[str] = []
    for stream in offer:
        if id(stream) not in taken or stream.payload_type is None:
            media.append(f"m={stream.kind} 0 {stream.proto} {stream.formats[0]}")
            continue
        direction = _ANSWER_DIRECTION[stream.direction]
        if held:
            direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
        ours = port if stream.kind == "audio" else video_port
        media += _media_lines(stream.kind, ours, (stream.payload_type,), direction)
    if not offer:
        media = _media_lines("audio", port, (0, 8), "sendrecv")
    return _sdp(address, media)


_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


@dataclasses.dataclass(eq=False)
class Dialog:
    """The one call: its ids, the INVITE that opened it, and where in-dialog requests go."""

    call_id: str
    local_tag: str
    outgoing: bool
    peer_number: str
    local_uri: str
    remote_uri: str
    remote_tag: str = ""
    remote_target: str = ""
    cseq: int = 1
    invite: Request | None = None  # ours (outgoing), or theirs (incoming)
    invite_tx: ClientTransaction | ServerTransaction | None = None
    state: CallState = CallState.IDLE
    held: bool = False
    challenged: bool = False
    provisional: bool = False  # a 1xx came: a CANCEL may go
    cancel_when_provisional: bool = False
    reinvite: ClientTransaction | None = None


class Phone:
    """One web phone device: registration of `number` and at most one call."""

    def __init__(
        self,
        *,
        number: str,
        contact_user: str,
        realm: str,
        ha1: dict[str, str],
        server: Peer,
        local: tuple[str, int],
        rtp: tuple[str, int],
        layer: TransactionLayer,
        scheduler: Scheduler,
        emit: Callable[[Event], None],
    ) -> None:
        self.number = number
        self.contact_user = contact_user
        self.realm = realm
        self.ha1 = ha1
        self.server = server
        self.local = local
        self.rtp = rtp
        self.layer = layer
        self.scheduler = scheduler
        self.emit = emit
        self.aor = f"sip:{number}@{realm}"
        self.contact = f"<sip:{contact_user}@{local[0]}:{local[1]}>"
        self.reg_call_id = random_token(12)
        self.reg_tag = random_token(6)
        self.reg_cseq = 0
        self.reg_challenged = False
        self.reg_timer: Timer | None = None
        self.registered = False
        self.closing = False
        self.dialog: Dialog | None = None
        self.remote: list[Stream] = []  # the peer's streams, from its last SDP
        self.video_rtp: tuple[str, int] | None = None  # set when the page sends video

    # ---- registration -------------------------------------------------------------

    def register(self, now: float, expires: int = REGISTER_EXPIRES, auth: str = "") -> None:
        self.reg_timer = None
        self.reg_cseq += 1
        request = make_request(
            "REGISTER",
            f"sip:{self.server.host}:{self.server.port}",
            via=self._via(),
            from_=f"<{self.aor}>;tag={self.reg_tag}",
            to=f"<{self.aor}>",
            call_id=self.reg_call_id,
            cseq=self.reg_cseq,
            contact=self.contact,
        )
        request.headers.set("Expires", str(expires))
        if auth:
            request.headers.set("Authorization", auth)
        self._send(request, now)

    def close(self, now: float) -> None:
        """The page went away: end the call (its CDR says why), then unregister."""
        self.closing = True
        if self.reg_timer is not None:
            self.reg_timer.cancel()
        if self.dialog is not None and self.dialog.state is not CallState.ENDED:
            self.hang_up(now, closed=True)
        if self.registered:
            self.reg_challenged = False
            self.register(now, expires=0)

    def _on_register_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        if resp.code in (401, 407) and not self.reg_challenged:
            auth = self._auth(tx, resp)
            if auth:
                self.reg_challenged = True
                expires = int(tx.request.headers.get("Expires") or REGISTER_EXPIRES)
                self.register(now, expires, auth)
                return
        self.reg_challenged = False
        if self.closing:
            self.registered = False
            return
        ok = 200 <= resp.code < 300
        self.registered = ok
        self.emit(Registered(ok, "" if ok else f"{resp.code} {resp.phrase}"))
        if ok:
            self.reg_timer = self.scheduler.call_at(
                now + REGISTER_EXPIRES * REFRESH_SHARE, self.register
            )

    # ---- calls we place -------------------------------------------------------------

    def dial(self, number: str, now: float) -> bool:
        """INVITE `number` through the worker's dial plan; False while a call is on."""
        if self.busy:
            return False
        dialog = Dialog(
            call_id=random_token(12),
            local_tag=random_token(6),
            outgoing=True,
            peer_number=number,
            local_uri=f"<{self.aor}>",
            remote_uri=f"<sip:{number}@{self.realm}>",
            state=CallState.CALLING,
        )
        self.dialog = dialog
        self._send_invite(dialog, self._offer(), now)
        self.emit(CallChanged(CallState.CALLING, number))
        return True

    def _send_invite(
        self, dialog: Dialog, sdp: bytes, now: float, auth: tuple[str, str] | None = None
    ) -> None:
        target = (
            dialog.remote_target
            or f"sip:{dialog.peer_number}@{self.server.host}:{self.server.port}"
        )
        request = self._request(dialog, "INVITE", target, body=sdp)
        if auth is not None:
            request.headers.set(*auth)
        tx = self._send(request, now)
        if dialog.state is CallState.ANSWERED:
            dialog.reinvite = tx
        else:
            dialog.invite, dialog.invite_tx = request, tx

    def _on_invite_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        dialog = self.dialog
        if dialog is None or tx not in (dialog.invite_tx, dialog.reinvite):
            if 200 <= resp.code < 300:  # a 2xx of a call given up meanwhile: ACK, then BYE
                self._ack_and_bye(tx, resp, now)
            return
        if resp.code in (401, 407) and not dialog.challenged:
            header = "Authorization" if resp.code == 401 else "Proxy-Authorization"
            auth = self._auth(tx, resp)
            if auth:
                dialog.challenged = True
                dialog.cseq += 1
                self._send_invite(dialog, tx.request.body, now, (header, auth))
                return
        if tx is dialog.reinvite:
            self._on_reinvite_response(dialog, resp, now)
        elif resp.code < 200:
            self._on_provisional(dialog, resp, now)
        elif resp.code < 300:
            self._on_answer(dialog, resp, now)
        elif dialog.state is not CallState.ENDED:
            self._end(dialog, f"{resp.code} {resp.phrase}")

    def _on_provisional(self, dialog: Dialog, resp: Response, now: float) -> None:
        dialog.provisional = True
        if dialog.cancel_when_provisional:
            dialog.cancel_when_provisional = False
            self._cancel(dialog, now)
            return
        if resp.code in (180, 183) and dialog.state is CallState.CALLING:
            dialog.state = CallState.RINGING
            self.emit(CallChanged(CallState.RINGING, dialog.peer_number))
        if resp.body:
            self._media_from(resp.body)

    def _on_answer(self, dialog: Dialog, resp: Response, now: float) -> None:
        dialog.remote_tag = resp.to_address.tag or ""
        contacts = resp.contact
        dialog.remote_target = str(contacts[0].uri) if contacts else dialog.remote_target
        self._ack(dialog, resp.cseq.sequence, now)
        if dialog.state is CallState.ANSWERED:
            return  # a retransmitted 2xx: ACKed again
        if dialog.state is CallState.ENDED:
            self._bye(dialog, now, closed=self.closing)
            return
        dialog.state = CallState.ANSWERED
        if resp.body:
            self._media_from(resp.body)
        self.emit(CallChanged(CallState.ANSWERED, dialog.peer_number))

    def _ack(self, dialog: Dialog, sequence: int, now: float) -> None:
        ack = self._request(dialog, "ACK", dialog.remote_target, cseq=sequence)
        self.layer.outbox.append(Send(bytes(ack), self.server))  # §13.2.2.4: no transaction

    def _ack_and_bye(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        request = tx.request
        stray = Dialog(
            call_id=request.call_id,
            local_tag=request.from_address.tag or "",
            outgoing=True,
            peer_number="",
            local_uri=request.headers["From"].split(";tag=")[0],
            remote_uri=request.headers["To"],
            remote_tag=resp.to_address.tag or "",
            remote_target=str(resp.contact[0].uri) if resp.contact else str(request.uri),
            cseq=request.cseq.sequence,
        )
        self._ack(stray, stray.cseq, now)
        self._bye(stray, now, closed=self.closing)

    # ---- calls we take -----------------------------------------------------------------

    def _on_invite(self, req: Request, tx: ServerTransaction, now: float) -> None:
        dialog = self.dialog
        if req.to_address.tag is not None:
            if dialog is not None and req.call_id == dialog.call_id:
                self._on_reinvite(dialog, req, tx, now)
            else:
                tx.respond(make_response(req, 481), now)
            return
        if self.busy or self.closing:
            tx.respond(make_response(req, 486, to_tag=random_token(6)), now)
            return
        caller = req.from_address
        dialog = Dialog(
            call_id=req.call_id,
            local_tag=random_token(6),
            outgoing=False,
            peer_number=caller.uri.user or caller.display_name or "",
            local_uri=req.headers["To"],
            remote_uri=req.headers["From"].split(";tag=")[0],
            remote_tag=caller.tag or "",
            remote_target=str(req.contact[0].uri) if req.contact else str(caller.uri),
            cseq=0,
            invite=req,
            invite_tx=tx,
            state=CallState.INCOMING,
        )
        self.dialog = dialog
        self.remote = streams(req.body) if req.body else []
        tx.respond(make_response(req, 180, to_tag=dialog.local_tag), now)
        self.emit(CallChanged(CallState.INCOMING, dialog.peer_number))

    def answer(self, now: float) -> bool:
        dialog = self.dialog
        if dialog is None or dialog.state is not CallState.INCOMING:
            return False
        assert dialog.invite is not None and isinstance(dialog.invite_tx, ServerTransaction)
        response = make_response(dialog.invite, 200, to_tag=dialog.local_tag)
        response.headers.set("Contact", self.contact)
        response.headers.set("Content-Type", "application/sdp")
        # No offer in the INVITE: ours goes in the 200, the answer comes in the ACK.
        response.body = self._answer() if self.remote else self._offer()
        dialog.invite_tx.respond(response, now)
        dialog.state = CallState.ANSWERED
        self._announce_media()
        self.emit(CallChanged(CallState.ANSWERED, dialog.peer_number))
        return True

    def _on_reinvite(self, dialog: Dialog, req: Request, tx: ServerTransaction, now: float) -> None:
        """The other side holds or resumes (re-INVITE, or an UPDATE with an offer): answer
        with our streams, directions mirrored."""
        if req.body:
            self._media_from(req.body)
        response = make_response(req, 200, to_tag=dialog.local_tag)
        response.headers.set("Contact", self.contact)
        response.headers.set("Content-Type", "application/sdp")
        response.body = self._answer(dialog.held)
        tx.respond(response, now)

    def _on_cancel(self, req: Request, tx: ServerTransaction, now: float) -> None:
        dialog = self.dialog
        invite_tx = self.layer.find_invite_server(req)
        tx.respond(make_response(req, 200 if invite_tx else 481), now)
        if dialog is None or invite_tx is None or dialog.invite_tx is not invite_tx:
            return
        if dialog.state is CallState.INCOMING and dialog.invite is not None:
            invite_tx.respond(make_response(dialog.invite, 487, to_tag=dialog.local_tag), now)
            self._end(dialog, "cancelled")

    # ---- ending, holding -------------------------------------------------------------

    def hang_up(self, now: float, closed: bool = False) -> bool:
        """The page's red button, or the page gone (`closed`): BYE, CANCEL or a refusal.
        False when there is no call to end."""
        dialog = self.dialog
        if dialog is None or dialog.state is CallState.ENDED:
            return False
        if dialog.state is CallState.ANSWERED:
            self._bye(dialog, now, closed)
        elif dialog.state is CallState.INCOMING and dialog.invite is not None:
            assert isinstance(dialog.invite_tx, ServerTransaction)
            code = 480 if closed else 603
            dialog.invite_tx.respond(
                make_response(dialog.invite, code, to_tag=dialog.local_tag), now
            )
        elif dialog.provisional:
            self._cancel(dialog, now)
        else:
            dialog.cancel_when_provisional = True  # §9.1: no CANCEL before a provisional
        self._end(dialog, "closed" if closed else "hung up")
        return True

    def hold(self, held: bool, now: float) -> bool:
        """Hold (`a=sendonly`) or resume (`a=sendrecv`) by re-INVITE."""
        dialog = self.dialog
        if dialog is None or dialog.state is not CallState.ANSWERED or dialog.reinvite is not None:
            return False
        dialog.held = held
        dialog.cseq += 1
        self._send_invite(dialog, self._offer("sendonly" if held else "sendrecv"), now)
        self._announce_media()
        self.emit(CallChanged(CallState.ANSWERED, dialog.peer_number, held=held))
        return True

    def _on_reinvite_response(self, dialog: Dialog, resp: Response, now: float) -> None:
        if resp.code < 200:
            return
        dialog.reinvite = None
        if resp.code < 300:
            self._ack(dialog, resp.cseq.sequence, now)
            if resp.body:
                self._media_from(resp.body)

    def _cancel(self, dialog: Dialog, now: float) -> None:
        if dialog.invite is None:
            return
        h = dialog.invite.headers
        cancel = make_request(
            "CANCEL",
            dialog.invite.uri,
            via=h.getlist("Via")[0],
            from_=h["From"],
            to=h["To"],
            call_id=h["Call-ID"],
            cseq=dialog.invite.cseq.sequence,
        )
        if self.closing:
            cancel.headers.set("Reason", CLOSED_REASON)
        self._send(cancel, now)

    def _bye(self, dialog: Dialog, now: float, closed: bool) -> None:
        dialog.cseq += 1
        bye = self._request(dialog, "BYE", dialog.remote_target)
        if closed:
            bye.headers.set("Reason", CLOSED_REASON)
        self._send(bye, now)

    def _on_bye(self, req: Request, tx: ServerTransaction, now: float) -> None:
        dialog = self.dialog
        if dialog is None or req.call_id != dialog.call_id or dialog.state is CallState.ENDED:
            tx.respond(make_response(req, 481), now)
            return
        tx.respond(make_response(req, 200), now)
        self._end(dialog, "remote hung up")

    def _end(self, dialog: Dialog, reason: str) -> None:
        if dialog.state is CallState.ENDED:
            return
        dialog.state = CallState.ENDED
        self.remote = []
        self._announce_media()
        self.emit(CallChanged(CallState.ENDED, dialog.peer_number, reason))

    # ---- messages in --------------------------------------------------------------------

    def on_request(self, req: Request, tx: ServerTransaction | None, now: float) -> None:
        """A request for this phone; `tx` None is the ACK of a 2xx (with the answer to the
        offer in our 200 when the INVITE had none)."""
        if tx is None:
            if req.method == "ACK" and req.body and self.busy:
                self._media_from(req.body)
            return
        handlers = {"INVITE": self._on_invite, "BYE": self._on_bye, "CANCEL": self._on_cancel}
        handler = handlers.get(req.method)
        dialog = self.dialog
        if handler is not None:
            handler(req, tx, now)
        elif req.method == "UPDATE" and req.body and dialog and req.call_id == dialog.call_id:
            self._on_reinvite(dialog, req, tx, now)  # an offer (RFC 3311): answered as one
        elif req.method in ("OPTIONS", "NOTIFY", "INFO", "UPDATE"):
            tx.respond(make_response(req, 200), now)
        else:
            tx.respond(make_response(req, 405), now)

    def on_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        method = tx.method
        if method == "REGISTER":
            self._on_register_response(tx, resp, now)
        elif method == "INVITE":
            self._on_invite_response(tx, resp, now)

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        """No answer from the worker at all."""
        if isinstance(tx, ClientTransaction) and tx.method == "REGISTER" and not self.closing:
            self.registered = False
            self.emit(Registered(False, "408 no answer from the server"))
            self.reg_timer = self.scheduler.call_at(now + 30, self.register)
        elif self.dialog is not None and tx in (self.dialog.invite_tx, self.dialog.reinvite):
            self._end(self.dialog, "408 no answer")

    # ---- helpers ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.dialog is not None and self.dialog.state is not CallState.ENDED

    def _media_from(self, body: bytes) -> None:
        self.remote = streams(body)
        self._announce_media()

    def _announce_media(self) -> None:
        """Where each kind's RTP goes now: the bridge follows these."""
        held = self.dialog is not None and self.dialog.held
        for kind in ("audio", "video"):
            stream = first(self.remote, kind)
            if stream is None or (kind == "video" and self.video_rtp is None):
                self.emit(MediaChanged(kind, None))
                continue
            assert stream.payload_type is not None
            where = (stream.address, stream.port)
            self.emit(
                MediaChanged(kind, where, stream.payload_type, stream.wants_ours and not held)
            )

    def _offer(self, direction: str = "sendrecv") -> bytes:
        video = self.video_rtp[1] if self.video_rtp else 0
        audio = first(self.remote, "audio")
        pts = (audio.payload_type,) if audio and audio.payload_type is not None else (0, 8)
        video_stream = first(self.remote, "video")
        video_pt = video_stream.payload_type if video_stream else None
        return offer_sdp(*self.rtp, video, direction, pts, video_pt or VIDEO_PT)

    def _answer(self, held: bool = False) -> bytes:
        video = self.video_rtp[1] if self.video_rtp else 0
        return answer_sdp(self.rtp[0], self.rtp[1], video, self.remote, held)

    def _auth(self, tx: ClientTransaction, resp: Response) -> str:
        header = "WWW-Authenticate" if resp.code == 401 else "Proxy-Authenticate"
        for challenge in resp.headers.getlist(header):
            answer = authorization_from_ha1(
                challenge, tx.method, str(tx.request.uri), self.number, self.ha1
            )
            if answer:
                return answer
        return ""

    def _via(self) -> Via:
        return Via("UDP", self.local[0], self.local[1], {"branch": new_branch(), "rport": None})

    def _request(
        self, dialog: Dialog, method: str, target: str | Uri, body: bytes = b"", cseq: int = 0
    ) -> Request:
        local, remote = dialog.local_uri, dialog.remote_uri
        to = f"{remote};tag={dialog.remote_tag}" if dialog.remote_tag else remote
        if not dialog.outgoing:
            local, to = f"{local.split(';tag=')[0]}", f"{remote};tag={dialog.remote_tag}"
        return make_request(
            method,
            target,
            via=self._via(),
            from_=f"{local};tag={dialog.local_tag}",
            to=to,
            call_id=dialog.call_id,
            cseq=cseq or dialog.cseq,
            contact=self.contact if method == "INVITE" else None,
            body=body,
        )

    def _send(self, request: Request, now: float) -> ClientTransaction:
        tx = self.layer.send_request(request, self.server, now)
        tx.owner = self
        return tx


class Phones:
    """The gateway's SIP side without IO: one transaction layer, its phones by contact.

    Datagrams and the time go in (`receive`); the outbox given fills with what to send.
    A request reaches the phone whose Contact user its Request-URI names.
    """

    def __init__(self, scheduler: Scheduler, outbox: list[Send]) -> None:
        self.layer = TransactionLayer(scheduler, outbox, self)
        self.by_contact: dict[str, Phone] = {}

    def add(self, phone: Phone) -> None:
        self.by_contact[phone.contact_user] = phone

    def remove(self, phone: Phone) -> None:
        if self.by_contact.get(phone.contact_user) is phone:
            del self.by_contact[phone.contact_user]

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        try:
            message = parse(data)
        except (RemoteProtocolError, ValueError):
            return  # only the worker talks to us; nothing to answer
        if isinstance(message, Response):
            self.layer.receive_response(message, now)
            return
        tx, new = self.layer.receive_request(message, peer, now)
        if tx is None and not new:
            return  # a retransmission, or the ACK of a final error
        phone = self.by_contact.get(message.uri.user or "")
        if phone is not None:
            phone.on_request(message, tx, now)
        elif tx is not None:
            tx.respond(make_response(message, 404), now)

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if isinstance(tx.owner, Phone):
            tx.owner.on_response(tx, response, now)

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        if isinstance(tx.owner, Phone):
            tx.owner.on_timeout(tx, now)
