"""Calls between local users: a B2BUA with the half-call model.

Each call has two legs (two dialogs): the O-side faces the caller (we are its
UAS), the T-side faces the callee (we are its UAC). Requests and responses
are re-built on the other leg, never forwarded; the O-side writes the CDR.

Call states and what moves them are in `CALL_TRANSITIONS`. ACK for a 2xx is
relayed end to end: the callee's 2xx is ACKed when the caller's ACK arrives
(carrying its body, so late offers work). No forking: a call goes to the
callee's most recently registered device. Route sets are not kept: phones
talk to the server directly.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sipmessage import URI, Parameters, Request, Response, Via

from . import cdr as cdrs
from .cdr import CallTag, Cdr
from .digest import Outcome
from .sipmsg import (
    Peer,
    RemoteProtocolError,
    Send,
    from_addr,
    make_request,
    make_response,
    new_branch,
    random_token,
    serialize,
    to_addr,
    to_tag,
)
from .timers import Timer
from .transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from .core import Engine

log = logging.getLogger(__name__)

# Headers passed from one leg to the other on requests and responses.
_PASSED_HEADERS = ("Reason", "Warning", "Retry-After", "Allow", "Subject", "Accept")


class CallState(enum.Enum):
    INITIATED = "initiated"  # INVITE sent to the callee
    RINGING = "ringing"  # 180/183 seen
    ANSWERED = "answered"  # 2xx relayed to the caller
    RELEASED = "released"


CALL_TRANSITIONS: dict[tuple[CallState, str], CallState] = {
    (CallState.INITIATED, "ringing"): CallState.RINGING,
    (CallState.RINGING, "ringing"): CallState.RINGING,
    (CallState.INITIATED, "answer"): CallState.ANSWERED,
    (CallState.RINGING, "answer"): CallState.ANSWERED,
    (CallState.INITIATED, "release"): CallState.RELEASED,
    (CallState.RINGING, "release"): CallState.RELEASED,
    (CallState.ANSWERED, "release"): CallState.RELEASED,
}


@dataclasses.dataclass(eq=False)
class Leg:
    """One dialog of the call, from the server's point of view."""

    side: str  # "O" | "T"
    call_id: str
    local_tag: str
    local_header: str  # our From/To value (with our tag) for requests we send
    remote_header: str  # theirs (with their tag once known)
    remote_target: str  # Request-URI for requests we send (their Contact)
    peer: Peer  # where requests go (source of their messages: NAT fix-up)
    fallback: Peer | None = None  # TCP: their Contact, if the connection has gone
    local_cseq: int = 0
    # 2xx to an INVITE we sent on this leg, waiting for the other leg's ACK.
    ack_cseq: int | None = None
    last_ack: bytes | None = None
    # INVITE server transaction on this leg whose 2xx waits for this leg's ACK.
    ist_waiting_ack: ServerTransaction | None = None


@dataclasses.dataclass(eq=False)
class Call:
    uuid: str
    caller: str
    dialed: str
    callee: str
    route: str
    start: float
    o: Leg
    t: Leg
    o_ist: ServerTransaction
    t_invite: Request | None  # kept while a CANCEL may still be needed
    state: CallState = CallState.INITIATED
    t_ict: ClientTransaction | None = None
    ring: float | None = None
    answer: float | None = None
    provisional_seen: bool = False
    cancel_pending: bool = False
    cancel_reason: list[str] = dataclasses.field(default_factory=list)
    timers: list[Timer] = dataclasses.field(default_factory=list)
    relays: dict[ClientTransaction, ServerTransaction] = dataclasses.field(default_factory=dict)

    def fire(self, event: str) -> bool:
        nxt = CALL_TRANSITIONS.get((self.state, event))
        if nxt is None:
            return False
        self.state = nxt
        return True

    def other(self, leg: Leg) -> Leg:
        return self.t if leg is self.o else self.o


class B2BUA:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}

    # ---- helpers -------------------------------------------------------------

    @property
    def config(self) -> Any:
        return self.engine.config

    def _via(self, transport: str) -> Via:
        c = self.config
        return Via(
            transport,
            c.public_address,
            c.listen.sip_port,
            Parameters(branch=new_branch(), rport=None),
        )

    def _contact(self, user: str, transport: str) -> str:
        c = self.config
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{user}@{c.public_address}:{c.listen.sip_port}{suffix}>"

    def _send(
        self, request: Request, peer: Peer, now: float, owner: Any, fallback: Peer | None = None
    ) -> ClientTransaction:
        tx = self.engine.layer.send_request(request, peer, now, fallback)
        tx.owner = owner
        return tx

    def _leg_request(
        self, leg: Leg, method: str, body: bytes = b"", ctype: str | None = None
    ) -> Request:
        leg.local_cseq += 1
        return make_request(
            method,
            leg.remote_target,
            via=self._via(leg.peer.transport),
            from_=leg.local_header,
            to=leg.remote_header,
            call_id=leg.call_id,
            cseq=leg.local_cseq,
            contact=self._contact("sipcloud", leg.peer.transport),
            body=body,
            content_type=ctype,
        )

    def _copy_headers(self, src: Request | Response, dst: Request | Response) -> None:
        for name in _PASSED_HEADERS:
            for value in src.headers.getlist(name):
                dst.headers.add(name, value)

    def _body(self, call: Call, towards: str, msg: Request | Response) -> tuple[bytes, str | None]:
        if not msg.body:
            return b"", None
        body = self.engine.media.rewrite(call.uuid, towards, msg.body)
        return body, msg.headers.get("Content-Type")

    def _reject(self, tx: ServerTransaction, code: int, phrase: str | None, now: float) -> None:
        tx.respond(make_response(tx.request, code, phrase, to_tag=random_token(6)), now)

    def _emit_state(self, call: Call, now: float) -> None:
        if self.config.cdr.realtime_display:
            self.engine.emit(
                "call",
                now,
                {
                    "call_id": call.o.call_id,
                    "caller": call.caller,
                    "callee": call.callee,
                    "state": call.state.value,
                },
            )

    def _write_cdr(self, cdr: Cdr, now: float) -> None:
        if cdr.answered or self.config.cdr.failed_call_cdr:
            self.engine.emit("cdr", now, cdr.data(), event_id=cdr.uuid)

    # ---- new calls -----------------------------------------------------------

    def on_invite(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        """An INVITE outside any dialog: authenticate, route, start the T-side."""
        engine = self.engine
        result = engine.auth.check(req.headers.get("Proxy-Authorization"), "INVITE", now)
        if result.outcome in (Outcome.CHALLENGE, Outcome.STALE):
            response = make_response(req, 407, to_tag=random_token(6))
            for value in engine.auth.challenges(now, stale=result.outcome is Outcome.STALE):
                response.headers.add("Proxy-Authenticate", value)
            tx.respond(response, now)
            return
        user = result.user
        if result.outcome is not Outcome.OK or user is None:
            self._reject(tx, 403, None, now)
            return
        tx.respond(make_response(req, 100), now)
        dialed = req.uri.user or to_addr(req).uri.user or ""
        call_uuid = str(uuid.uuid4())

        def refuse(code: int, phrase: str, cause: int, route: str, callee: str = "") -> None:
            self._reject(tx, code, phrase, now)
            self._write_cdr(
                Cdr(
                    uuid=call_uuid,
                    call_id=req.call_id,
                    caller=user.number,
                    dialed=dialed,
                    callee=callee,
                    route=route,
                    start=now,
                    ring=None,
                    answer=None,
                    release=now,
                    released_by="server",
                    status=code,
                    call_tag=CallTag.ROUTING_FAILED,
                    cause=cause,
                ),
                now,
            )

        max_forwards = req.max_forwards if req.max_forwards is not None else 70
        if max_forwards <= 0:
            refuse(483, "Too Many Hops", 25, "none")
            return
        if not dialed:
            refuse(484, "Address Incomplete", 28, "none")
            return
        decision = engine.dialplan.route(dialed, user.call_level)
        if decision.refused:
            refuse(decision.status, decision.reason, decision.cause, decision.route)
            return
        callee = decision.number
        bindings = engine.location.bindings(callee)
        if not bindings:
            refuse(480, "Temporarily Unavailable", 20, decision.route, callee)
            return
        binding = bindings[0]

        try:
            caller_contact = str(req.contact[0].uri) if req.contact else str(from_addr(req).uri)
        except (ValueError, IndexError) as exc:
            raise RemoteProtocolError("bad Contact") from exc
        o_tag = random_token(6)
        o = Leg(
            side="O",
            call_id=req.call_id,
            local_tag=o_tag,
            local_header=f"{req.headers['To']};tag={o_tag}",
            remote_header=req.headers["From"],
            remote_target=caller_contact,
            peer=peer,
            fallback=_contact_peer(caller_contact, peer),
        )
        t_tag = random_token(6)
        host = self.config.public_address
        name = from_addr(req).name or user.display_name
        display = '"' + name.replace('"', "") + '" ' if name else ""
        t = Leg(
            side="T",
            call_id=random_token(12),
            local_tag=t_tag,
            local_header=f"{display}<sip:{user.number}@{host}>;tag={t_tag}",
            remote_header=f"<sip:{callee}@{host}>",
            remote_target=binding.contact,
            peer=binding.peer,
            fallback=_contact_peer(binding.contact, binding.peer),
            local_cseq=1,
        )
        call = Call(
            uuid=call_uuid,
            caller=user.number,
            dialed=dialed,
            callee=callee,
            route=decision.route,
            start=now,
            o=o,
            t=t,
            o_ist=tx,
            t_invite=req,  # replaced below by the request we send
        )
        body, ctype = self._body(call, "T", req)
        invite = make_request(
            "INVITE",
            binding.contact,
            via=self._via(t.peer.transport),
            from_=t.local_header,
            to=t.remote_header,
            call_id=t.call_id,
            cseq=1,
            contact=self._contact(user.number, t.peer.transport),
            body=body,
            content_type=ctype,
        )
        invite.headers.set("Max-Forwards", str(max_forwards - 1))
        self._copy_headers(req, invite)
        call.t_invite = invite
        tx.owner = call
        self.calls[call.uuid] = call
        self.dialogs[(o.call_id, o.local_tag)] = (call, o)
        self.dialogs[(t.call_id, t.local_tag)] = (call, t)
        call.t_ict = self._send(invite, t.peer, now, (call, "invite"), t.fallback)
        limits = self.config.call_limits
        if limits.no_answer_timeout:
            call.timers.append(
                engine.scheduler.call_at(now + limits.no_answer_timeout, self._no_answer, call)
            )
        self._emit_state(call, now)

    # ---- responses on the T-side ---------------------------------------------

    def on_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        call, purpose = tx.owner
        if purpose == "invite":
            self._invite_response(call, tx, resp, now)
        elif purpose == "relay":
            self._relay_response(call, tx, resp, now)

    def _invite_response(
        self, call: Call, tx: ClientTransaction, resp: Response, now: float
    ) -> None:
        code = resp.code
        if code >= 200 and not call.cancel_pending:
            call.t_invite = None  # final response: no CANCEL from now on
        t = call.t
        if call.state is CallState.RELEASED:
            if 200 <= code < 300:  # answered after we gave up (§9.1): ACK, then BYE
                self._learn_remote(t, resp)
                t.ack_cseq = resp.cseq.sequence
                self._send_ack(call, t, b"", None, now)
                self._send(self._leg_request(t, "BYE"), t.peer, now, (call, "bye"), t.fallback)
            elif code < 200 and call.cancel_pending:
                self._send_cancel(call, now)
            return
        if code == 100:
            return
        if code < 200:
            call.provisional_seen = True
            if call.cancel_pending:
                self._send_cancel(call, now)
                return
            if code in (180, 183) and call.fire("ringing") and call.ring is None:
                call.ring = now
                self._emit_state(call, now)
            self._relay_to(call, call.o, call.o_ist, resp, now)
            return
        if code < 300:
            if call.state is CallState.ANSWERED:
                if t.last_ack is not None:  # retransmitted 2xx: our ACK was lost
                    self.engine.outbox.append(Send(t.last_ack, t.peer, t.fallback))
                return
            self._learn_remote(t, resp)
            call.fire("answer")
            call.answer = now
            t.ack_cseq = resp.cseq.sequence
            call.o.ist_waiting_ack = call.o_ist
            self._relay_to(call, call.o, call.o_ist, resp, now)
            for timer in call.timers:
                timer.cancel()
            call.timers.clear()
            limit = self.config.call_limits.max_call_duration
            if limit:
                call.timers.append(
                    self.engine.scheduler.call_at(now + limit, self._max_duration, call)
                )
            self._emit_state(call, now)
            return
        self._relay_to(call, call.o, call.o_ist, resp, now)
        cause = cdrs.release_cause(code, resp.headers.getlist("Reason"))
        self._release(call, now, CallTag.CALLEE_REJECTED, cause, "callee", code)

    def _learn_remote(self, leg: Leg, resp: Response) -> None:
        leg.remote_header = resp.headers["To"]
        try:
            contacts = resp.contact
        except ValueError:
            contacts = []
        if contacts:
            leg.remote_target = str(contacts[0].uri)

    def _relay_to(
        self, call: Call, leg: Leg, stx: ServerTransaction, resp: Response, now: float
    ) -> None:
        """Re-build a response from the other leg on `stx`, a transaction of `leg`."""
        out = make_response(stx.request, resp.code, resp.phrase, to_tag=leg.local_tag)
        if 100 < resp.code < 300:
            out.headers.set("Contact", self._contact("sipcloud", leg.peer.transport))
        self._copy_headers(resp, out)
        body, ctype = self._body(call, leg.side, resp)
        if body:
            out.headers.set("Content-Type", ctype or "application/sdp")
            out.body = body
        stx.respond(out, now)

    def _relay_response(
        self, call: Call, tx: ClientTransaction, resp: Response, now: float
    ) -> None:
        stx = call.relays.get(tx)
        if stx is None or resp.code == 100:
            return
        from_leg = call.t if tx.request.call_id == call.t.call_id else call.o
        to_leg = call.other(from_leg)
        if resp.code >= 200:
            del call.relays[tx]
        if stx.final_sent:
            if 200 <= resp.code < 300 and from_leg.last_ack is not None:
                self.engine.outbox.append(Send(from_leg.last_ack, from_leg.peer, from_leg.fallback))
            return
        if 200 <= resp.code < 300 and tx.method == "INVITE":
            from_leg.ack_cseq = resp.cseq.sequence
            to_leg.ist_waiting_ack = stx
        self._relay_to(call, to_leg, stx, resp, now)

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        if isinstance(tx, ServerTransaction):
            call = tx.owner
            if isinstance(call, Call) and call.state is CallState.ANSWERED:
                self._bye_both(call, now)
                self._release(call, now, CallTag.NO_ACK, cdrs.TEMPORARY_FAILURE, "server", 200)
            return
        call, purpose = tx.owner
        if purpose == "invite" and call.state is not CallState.RELEASED:
            self._reject(call.o_ist, 408, None, now)
            self._release(
                call, now, CallTag.CALLEE_UNREACHABLE, cdrs.NO_USER_RESPONDING, "server", 408
            )
        elif purpose == "relay":
            stx = call.relays.pop(tx, None)
            if stx is not None and not stx.final_sent:
                stx.respond(make_response(stx.request, 408), now)

    # ---- requests from the caller or callee ----------------------------------

    def on_ack(self, req: Request, now: float) -> None:
        """An ACK no transaction matched: the ACK of a 2xx, relayed to the other leg."""
        found = self.dialogs.get((req.call_id, to_tag(req) or ""))
        if found is None:
            return
        call, leg = found
        if leg.ist_waiting_ack is not None:
            leg.ist_waiting_ack.receive_ack(now)
            leg.ist_waiting_ack = None
            other = call.other(leg)
            body, ctype = self._body(call, other.side, req)
            self._send_ack(call, other, body, ctype, now)

    def _send_ack(self, call: Call, leg: Leg, body: bytes, ctype: str | None, now: float) -> None:
        if leg.ack_cseq is None:
            return
        ack = make_request(
            "ACK",
            leg.remote_target,
            via=self._via(leg.peer.transport),
            from_=leg.local_header,
            to=leg.remote_header,
            call_id=leg.call_id,
            cseq=leg.ack_cseq,
            body=body,
            content_type=ctype,
        )
        leg.last_ack = serialize(ack)
        leg.ack_cseq = None
        self.engine.outbox.append(Send(leg.last_ack, leg.peer, leg.fallback))

    def on_cancel(self, req: Request, tx: ServerTransaction, now: float) -> None:
        ist = self.engine.layer.find_invite_server(req)
        if ist is None:
            tx.respond(make_response(req, 481), now)
            return
        tx.respond(make_response(req, 200), now)
        call = ist.owner
        if not isinstance(call, Call):
            if not ist.final_sent:
                self._reject(ist, 487, None, now)
            return
        if call.state in (CallState.ANSWERED, CallState.RELEASED):
            return
        self._reject_call(call, 487, now)
        call.cancel_reason = req.headers.getlist("Reason")
        cause = cdrs.q850_cause(call.cancel_reason) or cdrs.NORMAL_CLEARING
        self._cancel_t_side(call, now)
        self._release(call, now, CallTag.CALLER_CANCEL, cause, "caller", 487)

    def _reject_call(self, call: Call, code: int, now: float, phrase: str | None = None) -> None:
        if call.o_ist.final_sent:
            return
        out = make_response(call.o_ist.request, code, phrase, to_tag=call.o.local_tag)
        call.o_ist.respond(out, now)

    def _cancel_t_side(self, call: Call, now: float) -> None:
        if call.provisional_seen:
            self._send_cancel(call, now)
        else:
            call.cancel_pending = True  # §9.1: no CANCEL before a provisional response

    def _send_cancel(self, call: Call, now: float) -> None:
        call.cancel_pending = False
        inv = call.t_invite
        if inv is None:
            return
        cancel = Request(method="CANCEL", uri=inv.uri)
        h = cancel.headers
        h.set("Via", inv.headers.getlist("Via")[0])
        h.set("Max-Forwards", "70")
        h.set("From", inv.headers["From"])
        h.set("To", inv.headers["To"])
        h.set("Call-ID", inv.headers["Call-ID"])
        h.set("CSeq", f"{inv.cseq.sequence} CANCEL")
        for value in call.cancel_reason:
            h.add("Reason", value)
        self._send(cancel, call.t.peer, now, (call, "cancel"), call.t.fallback)

    def on_in_dialog(self, req: Request, tx: ServerTransaction, now: float) -> None:
        found = self.dialogs.get((req.call_id, to_tag(req) or ""))
        if found is None:
            tx.respond(make_response(req, 481), now)
            return
        call, leg = found
        other = call.other(leg)
        if req.method == "BYE":
            tx.respond(make_response(req, 200), now)
            if call.state is CallState.ANSWERED:
                bye = self._leg_request(other, "BYE")
                self._copy_headers(req, bye)
                self._send(bye, other.peer, now, (call, "bye"), other.fallback)
                tag = CallTag.CALLER_BYE if leg is call.o else CallTag.CALLEE_BYE
                by = "caller" if leg is call.o else "callee"
                self._release(call, now, tag, cdrs.NORMAL_CLEARING, by, 200)
            elif leg is call.t:  # callee ended its early dialog: treat as a refusal
                self._reject_call(call, 480, now)
                self._release(call, now, CallTag.CALLEE_REJECTED, 18, "callee", 480)
            else:
                self._reject_call(call, 487, now)
                self._cancel_t_side(call, now)
                self._release(call, now, CallTag.CALLER_CANCEL, 16, "caller", 487)
            return
        if call.state is not CallState.ANSWERED:
            tx.respond(make_response(req, 491 if req.method == "INVITE" else 481), now)
            return
        if req.method == "INVITE":
            tx.respond(make_response(req, 100), now)
            tx.owner = call
        body, ctype = self._body(call, other.side, req)
        out = self._leg_request(other, req.method, body, ctype)
        self._copy_headers(req, out)
        for name in ("Event", "Subscription-State", "Content-Disposition", "Info-Package"):
            for value in req.headers.getlist(name):
                out.headers.add(name, value)
        relay = self._send(out, other.peer, now, (call, "relay"), other.fallback)
        call.relays[relay] = tx

    # ---- ends of calls -------------------------------------------------------

    def _no_answer(self, now: float, call: Call) -> None:
        if call.state in (CallState.INITIATED, CallState.RINGING):
            self._reject_call(call, 480, now, "Temporarily Unavailable - no answer")
            self._cancel_t_side(call, now)
            cause = cdrs.NO_ANSWER if call.ring is not None else cdrs.NO_USER_RESPONDING
            self._release(call, now, CallTag.NO_ANSWER_TIMEOUT, cause, "server", 480)

    def _max_duration(self, now: float, call: Call) -> None:
        if call.state is CallState.ANSWERED:
            self._bye_both(call, now)
            self._release(call, now, CallTag.MAX_DURATION, cdrs.NORMAL_CLEARING, "server", 200)

    def _bye_both(self, call: Call, now: float) -> None:
        for leg in (call.o, call.t):
            self._send(self._leg_request(leg, "BYE"), leg.peer, now, (call, "bye"), leg.fallback)

    def stop_all(self, now: float) -> None:
        """Worker stopping: BYE answered calls, refuse ringing ones (CDR callTag SERVER_STOP)."""
        for call in list(self.calls.values()):
            if call.state is CallState.ANSWERED:
                self._bye_both(call, now)
                self._release(call, now, CallTag.SERVER_STOP, cdrs.NORMAL_CLEARING, "server", 200)
            elif call.state is not CallState.RELEASED:
                self._reject_call(call, 503, now, "Service Unavailable - server stopping")
                self._cancel_t_side(call, now)
                self._release(call, now, CallTag.SERVER_STOP, cdrs.TEMPORARY_FAILURE, "server", 503)

    def drop_user(self, number: str, now: float) -> None:
        """A user deleted from the config: end their calls as a server stop would."""
        for call in list(self.calls.values()):
            if number in (call.caller, call.callee) and call.state is CallState.ANSWERED:
                self._bye_both(call, now)
                self._release(call, now, CallTag.SERVER_STOP, cdrs.NORMAL_CLEARING, "server", 200)

    def _release(
        self, call: Call, now: float, tag: CallTag, cause: int, by: str, status: int
    ) -> None:
        if not call.fire("release"):
            return
        for timer in call.timers:
            timer.cancel()
        call.timers.clear()
        self.calls.pop(call.uuid, None)
        call.relays.clear()
        # Keep the dialogs a little for crossing BYEs and ACK retransmissions.
        self.engine.scheduler.call_at(now + 32.0, self._forget, call)
        self.engine.media.release(call.uuid)
        self._write_cdr(
            Cdr(
                uuid=call.uuid,
                call_id=call.o.call_id,
                caller=call.caller,
                dialed=call.dialed,
                callee=call.callee,
                route=call.route,
                start=call.start,
                ring=call.ring,
                answer=call.answer,
                release=now,
                released_by=by,
                status=status,
                call_tag=tag,
                cause=cause,
            ),
            now,
        )
        self._emit_state(call, now)

    def _forget(self, now: float, call: Call) -> None:
        self.dialogs.pop((call.o.call_id, call.o.local_tag), None)
        self.dialogs.pop((call.t.call_id, call.t.local_tag), None)


def _contact_peer(contact: str, peer: Peer) -> Peer | None:
    """The Contact's own address, for stream transports only."""
    if not peer.reliable:
        return None
    try:
        uri = URI.parse(contact)
    except ValueError:
        return None
    return Peer(peer.transport, uri.host, uri.port or 5060)
