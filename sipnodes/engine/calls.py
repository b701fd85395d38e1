"""Calls between local users: a B2BUA with the half-call model.

Each call has two legs (two dialogs): the O-side faces the caller (we are its
UAS), the T-side faces the callee (we are its UAC). Requests and responses
are re-built on the other leg, never forwarded; the O-side writes the CDR.

Every decision about a call is one entry of `CALL_TABLE`, keyed by (state,
event): a handler and the next state. The table covers every pair, so a pair
missing from it is a bug (`UnexpectedCallEvent`), never a silent no-op. What
is not a decision (matching a message to its call, relaying an in-dialog
response or a 2xx ACK) is plumbing around the table.

ACK for a 2xx is relayed end to end: the callee's 2xx is ACKed when the
caller's ACK arrives (carrying its body, so late offers work). No forking: a
call goes to the callee's most recently registered device. Route sets are not
kept: phones talk to the server directly.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping

from . import cdr as cdrs
from .callmodel import (
    SETUP_STATES,
    Call,
    CallEvent,
    CallRecord,
    CallState,
    CallTx,
    Leg,
    Trigger,
    TxPurpose,
)
from .cdr import CallTag, Cdr
from .config import CallLimits, CdrOptions, Config, User
from .dialplan import DialPlan
from .digest import Authenticator, Outcome
from .events import CallData, EventData
from .location import Binding, LocationTable
from .media import Media, MediaPortsExhausted
from .message import RemoteProtocolError, Request, Response, Uri, Via, quoted_string
from .sipmsg import (
    Peer,
    Send,
    make_response,
    new_branch,
    random_token,
    request_on_invite,
)
from .timers import Scheduler, ToWall
from .transaction import ClientTransaction, ServerTransaction, TransactionLayer

# Headers passed from one leg to the other on requests and responses.
_PASSED_HEADERS = ("Reason", "Warning", "Retry-After", "Allow", "Subject", "Accept")
# Headers of in-dialog requests (INFO, NOTIFY, ...) that the other leg needs too.
_IN_DIALOG_HEADERS = ("Event", "Subscription-State", "Content-Disposition", "Info-Package")
FORGET_AFTER = 32.0  # keep a released call's dialogs for crossing BYEs and ACK retransmissions

Emit = Callable[[EventData, float], None]


class UnexpectedCallEvent(Exception):  # not RuntimeError: mypyc cannot subclass that
    """A (state, event) pair `CALL_TABLE` does not declare: a bug in this module."""


@dataclasses.dataclass(frozen=True)
class CallSettings:
    """The part of the server's config the B2BUA reads."""

    public_address: str
    sip_port: int
    domain: str  # the server's SIP domain (its realm): what callees see the caller at
    cdr: CdrOptions
    limits: CallLimits

    @classmethod
    def from_config(cls, config: Config) -> CallSettings:
        listen = config.listen
        return cls(
            config.public_address, listen.sip_port, config.realm, config.cdr, config.call_limits
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why the server itself refuses a new call (routing), with the CDR's cause."""

    status: int
    phrase: str
    cause: int


class B2BUA:
    """The call core: the transaction user for every call's transactions."""

    def __init__(
        self,
        *,
        layer: TransactionLayer,
        scheduler: Scheduler,
        location: LocationTable,
        media: Media,
        emit: Emit,
        to_wall: ToWall,
        settings: CallSettings,
        auth: Authenticator,
        dialplan: DialPlan,
    ) -> None:
        self.layer = layer
        self.scheduler = scheduler
        self.location = location
        self.media = media
        self.emit = emit
        self.to_wall = to_wall
        self.configure(settings, auth, dialplan)
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}

    def configure(self, settings: CallSettings, auth: Authenticator, dialplan: DialPlan) -> None:
        """A new config (SIGHUP): calls under way keep going under the new settings."""
        self.settings = settings
        self.auth = auth
        self.dialplan = dialplan

    # ---- the table ------------------------------------------------------------

    def _fire(self, call: Call, event: CallEvent, now: float, trigger: Trigger) -> None:
        handler, next_state = transition(call.state, event)
        call.state = next_state
        handler(self, call, now, trigger)

    # ---- new calls ------------------------------------------------------------

    def on_invite(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        """An INVITE outside any dialog: authenticate, route, start the T-side."""
        user = self._authenticate(req, tx, now)
        if user is None:
            return
        tx.respond(make_response(req, 100), now)
        record = CallRecord(
            uuid=str(uuid.uuid4()),
            call_id=req.call_id,
            caller=user.number,
            dialed=req.uri.user or req.to_address.uri.user or "",
            callee="",
            route="none",
            start=self.to_wall(now),
        )
        outcome = self._route(req, user, record)
        if isinstance(outcome, Refusal):
            self._reject(tx, outcome.status, outcome.phrase, now)
            self._write_cdr(
                record, now, "server", outcome.status, CallTag.ROUTING_FAILED, outcome.cause
            )
            return
        call = self._new_call(req, tx, peer, user, record, outcome)
        try:
            self._start_t_side(call, req, now)
        except MediaPortsExhausted:
            self._reject(tx, 503, "Service Unavailable - no media ports", now)
            cause = cdrs.RESOURCE_UNAVAILABLE
            self._write_cdr(record, now, "server", 503, CallTag.NO_MEDIA_PORTS, cause)

    def _authenticate(self, req: Request, tx: ServerTransaction, now: float) -> User | None:
        """The calling local user, or None once the INVITE is challenged or refused."""
        result = self.auth.check(req.headers.get("Proxy-Authorization"), "INVITE", now)
        if result.outcome in (Outcome.CHALLENGE, Outcome.STALE):
            response = make_response(req, 407, to_tag=random_token(6))
            for value in self.auth.challenges(now, stale=result.outcome is Outcome.STALE):
                response.headers.add("Proxy-Authenticate", value)
            tx.respond(response, now)
            return None
        if result.outcome is not Outcome.OK or result.user is None:
            self._reject(tx, 403, None, now)
            return None
        return result.user

    def _route(self, req: Request, user: User, record: CallRecord) -> Binding | Refusal:
        """Where the call goes (filling in the record's route and callee), or why not."""
        if _max_forwards(req) <= 0:
            return Refusal(483, "Too Many Hops", 25)
        if not record.dialed:
            return Refusal(484, "Address Incomplete", 28)
        decision = self.dialplan.route(record.dialed, user.call_level)
        record.route = decision.route
        if decision.refused:
            return Refusal(decision.status, decision.reason, decision.cause)
        record.callee = decision.number
        bindings = self.location.bindings(record.callee)
        if not bindings:
            return Refusal(480, "Temporarily Unavailable", 20)
        return bindings[0]

    def _new_call(
        self,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        user: User,
        record: CallRecord,
        binding: Binding,
    ) -> Call:
        try:
            caller_contact = str(req.contact[0].uri) if req.contact else str(req.from_address.uri)
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
        host = self.settings.domain
        name = user.display_name or req.from_address.name  # the portal's name comes first
        display = quoted_string(name) + " " if name else ""
        t = Leg(
            side="T",
            call_id=random_token(12),
            local_tag=t_tag,
            local_header=f"{display}<sip:{user.number}@{host}>;tag={t_tag}",
            remote_header=f"<sip:{record.callee}@{host}>",
            remote_target=binding.contact,
            peer=binding.peer,
            fallback=_contact_peer(binding.contact, binding.peer),
        )
        return Call(record=record, o=o, t=t, o_ist=tx, t_invite=None)

    def _start_t_side(self, call: Call, req: Request, now: float) -> None:
        t = call.t
        body, ctype = self._body(call, "T", req)
        invite = t.request(
            "INVITE", self._via(t), self._contact(call.record.caller, t), body, ctype
        )
        invite.headers.set("Max-Forwards", str(_max_forwards(req) - 1))
        _copy_headers(req, invite, _PASSED_HEADERS)
        call.t_invite = invite
        call.o_ist.owner = call
        self.calls[call.uuid] = call
        self.dialogs[(call.o.call_id, call.o.local_tag)] = (call, call.o)
        self.dialogs[(t.call_id, t.local_tag)] = (call, t)
        self._send(call, TxPurpose.INVITE, invite, t, now)
        self._start_timer(call, self.settings.limits.no_answer_timeout, CallEvent.NO_ANSWER, now)
        self._emit_state(call, now)

    # ---- inputs from the transaction layer -----------------------------------

    def on_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        owner = tx.owner
        if not isinstance(owner, CallTx):
            return
        call = owner.call
        if owner.purpose is TxPurpose.RELAY:
            self._relay_response(call, tx, resp, now)
        elif owner.purpose is TxPurpose.INVITE and resp.code != 100:
            if resp.code >= 200:
                call.t_invite = None  # final response: no CANCEL from now on
            self._fire(call, _invite_event(resp.code), now, Trigger(response=resp))

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        owner = tx.owner
        if isinstance(owner, Call):  # Timer L: our 2xx to the caller was never ACKed
            self._fire(owner, CallEvent.NO_ACK, now, Trigger())
        elif isinstance(owner, CallTx) and owner.purpose is TxPurpose.INVITE:
            self._fire(owner.call, CallEvent.UNREACHABLE, now, Trigger())
        elif isinstance(owner, CallTx) and isinstance(tx, ClientTransaction):
            stx = owner.call.relays.pop(tx, None)
            if stx is not None and not stx.final_sent:
                stx.respond(make_response(stx.request, 408), now)

    def _start_timer(self, call: Call, seconds: int, event: CallEvent, now: float) -> None:
        """`event` for the call after `seconds` (0: never) unless the call cancels it first."""
        if seconds:
            call.timers.append(self.scheduler.call_at(now + seconds, self._timer, call, event))

    def _timer(self, now: float, call: Call, event: CallEvent) -> None:
        self._fire(call, event, now, Trigger())

    # ---- inputs from the caller or the callee --------------------------------

    def on_ack(self, req: Request, now: float) -> None:
        """An ACK no transaction matched: the ACK of a 2xx, relayed to the other leg."""
        found = self.dialogs.get((req.call_id, req.to_address.tag or ""))
        if found is None:
            return
        call, leg = found
        if leg.ist_waiting_ack is not None:
            leg.ist_waiting_ack.receive_ack(now)
            leg.ist_waiting_ack = None
            other = call.other(leg)
            body, ctype = self._body(call, other.side, req)
            self._send_ack(other, body, ctype)

    def on_cancel(self, req: Request, tx: ServerTransaction, now: float) -> None:
        ist = self.layer.find_invite_server(req)
        if ist is None:
            tx.respond(make_response(req, 481), now)
            return
        tx.respond(make_response(req, 200), now)
        call = ist.owner
        if isinstance(call, Call):
            self._fire(call, CallEvent.CANCEL, now, Trigger(request=req))
        elif not ist.final_sent:  # an INVITE we had not turned into a call yet
            self._reject(ist, 487, None, now)

    def on_in_dialog(self, req: Request, tx: ServerTransaction, now: float) -> None:
        found = self.dialogs.get((req.call_id, req.to_address.tag or ""))
        if found is None:
            tx.respond(make_response(req, 481), now)
            return
        call, leg = found
        trigger = Trigger(request=req, tx=tx, leg=leg)
        if req.method == "BYE":
            tx.respond(make_response(req, 200), now)
            event = CallEvent.CALLER_BYE if leg is call.o else CallEvent.CALLEE_BYE
            self._fire(call, event, now, trigger)
        else:
            self._fire(call, CallEvent.IN_DIALOG, now, trigger)

    def stop_all(self, now: float) -> None:
        """The worker is stopping: end every call (CDR callTag SERVER_STOP)."""
        for call in list(self.calls.values()):
            self._fire(call, CallEvent.STOP, now, Trigger())

    def check_media(self, now: float) -> None:
        """The core's one-second sweep: end the calls whose media stopped (relay on)."""
        for call_uuid in self.media.idle_calls(now):
            call = self.calls.get(call_uuid)
            if call is not None:
                self._fire(call, CallEvent.MEDIA_TIMEOUT, now, Trigger())

    def drop_user(self, number: str, now: float) -> None:
        """A user deleted from the config: end their calls as a server stop would."""
        for call in list(self.calls.values()):
            if number in (call.record.caller, call.record.callee):
                self._fire(call, CallEvent.USER_REMOVED, now, Trigger())

    # ---- handlers (the table's actions) --------------------------------------

    def _ignore(self, call: Call, now: float, trigger: Trigger) -> None:
        return None

    def _relay_provisional(self, call: Call, now: float, trigger: Trigger) -> None:
        assert trigger.response is not None
        self._relay_to(call, call.o, call.o_ist, trigger.response, now)

    def _ring(self, call: Call, now: float, trigger: Trigger) -> None:
        if call.record.ring is None:
            call.record.ring = self.to_wall(now)
            self._emit_state(call, now)
        self._relay_provisional(call, now, trigger)

    def _answer(self, call: Call, now: float, trigger: Trigger) -> None:
        resp = trigger.response
        assert resp is not None
        t = call.t
        self._learn_remote(t, resp)
        call.record.answer = self.to_wall(now)
        t.ack_cseq = resp.cseq.sequence
        call.o.ist_waiting_ack = call.o_ist
        self._relay_to(call, call.o, call.o_ist, resp, now)
        call.cancel_timers()
        self._start_timer(call, self.settings.limits.max_call_duration, CallEvent.MAX_DURATION, now)
        self._emit_state(call, now)

    def _resend_ack(self, call: Call, now: float, trigger: Trigger) -> None:
        t = call.t
        if t.last_ack is not None:  # a retransmitted 2xx: our ACK was lost
            self.layer.outbox.append(Send(t.last_ack, t.peer, t.fallback))

    def _ack_and_bye(self, call: Call, now: float, trigger: Trigger) -> None:
        """The callee answered after we gave up (§9.1): ACK its 2xx, then BYE."""
        assert trigger.response is not None
        t = call.t
        self._learn_remote(t, trigger.response)
        t.ack_cseq = trigger.response.cseq.sequence
        self._send_ack(t, b"", None)
        self._send_bye(call, t, now)

    def _send_cancel(self, call: Call, now: float, trigger: Trigger) -> None:
        inv = call.t_invite
        if inv is None:
            return
        cancel = request_on_invite(inv, "CANCEL")
        for value in call.cancel_reason:
            cancel.headers.add("Reason", value)
        self._send(call, TxPurpose.CANCEL, cancel, call.t, now)

    def _refused(self, call: Call, now: float, trigger: Trigger) -> None:
        resp = trigger.response
        assert resp is not None
        self._relay_to(call, call.o, call.o_ist, resp, now)
        cause = cdrs.release_cause(resp.code, resp.headers.getlist("Reason"))
        self._release(call, now, CallTag.CALLEE_REJECTED, cause, "callee", resp.code)

    def _unreachable(self, call: Call, now: float, trigger: Trigger) -> None:
        self._reject(call.o_ist, 408, None, now)
        self._release(call, now, CallTag.CALLEE_UNREACHABLE, cdrs.NO_USER_RESPONDING, "server", 408)

    def _caller_gave_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """CANCEL, or BYE on the early dialog, from the caller before the answer."""
        self._reject_caller(call, 487, now)
        cause = cdrs.NORMAL_CLEARING
        if trigger.request is not None and trigger.request.method == "CANCEL":
            call.cancel_reason = trigger.request.headers.getlist("Reason")
            cause = cdrs.q850_cause(call.cancel_reason) or cause
        self._cancel_callee(call, now)
        self._release(call, now, CallTag.CALLER_CANCEL, cause, "caller", 487)

    def _callee_left_early(self, call: Call, now: float, trigger: Trigger) -> None:
        """BYE on the early dialog from the callee: a refusal."""
        self._reject_caller(call, 480, now)
        self._release(call, now, CallTag.CALLEE_REJECTED, cdrs.NO_USER_RESPONDING, "callee", 480)

    def _hang_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """BYE on an answered call: pass it to the other leg."""
        assert trigger.request is not None and trigger.leg is not None
        self._send_bye(call, call.other(trigger.leg), now, copy_from=trigger.request)
        by_caller = trigger.leg is call.o
        tag = CallTag.CALLER_BYE if by_caller else CallTag.CALLEE_BYE
        by = "caller" if by_caller else "callee"
        self._release(call, now, tag, cdrs.NORMAL_CLEARING, by, 200)

    def _relay_in_dialog(self, call: Call, now: float, trigger: Trigger) -> None:
        req, tx, leg = trigger.request, trigger.tx, trigger.leg
        assert req is not None and tx is not None and leg is not None
        if req.method == "INVITE":
            tx.respond(make_response(req, 100), now)
            tx.owner = call  # its 2xx must be ACKed (Timer L -> NO_ACK)
        other = call.other(leg)
        body, ctype = self._body(call, other.side, req)
        out = other.request(req.method, self._via(other), self._contact(None, other), body, ctype)
        _copy_headers(req, out, _PASSED_HEADERS + _IN_DIALOG_HEADERS)
        call.relays[self._send(call, TxPurpose.RELAY, out, other, now)] = tx

    def _refuse_in_dialog(self, call: Call, now: float, trigger: Trigger) -> None:
        req, tx = trigger.request, trigger.tx
        assert req is not None and tx is not None
        tx.respond(make_response(req, 491 if req.method == "INVITE" else 481), now)

    def _no_answer(self, call: Call, now: float, trigger: Trigger) -> None:
        self._reject_caller(call, 480, now, "Temporarily Unavailable - no answer")
        self._cancel_callee(call, now)
        cause = cdrs.NO_ANSWER if call.record.ring is not None else cdrs.NO_USER_RESPONDING
        self._release(call, now, CallTag.NO_ANSWER_TIMEOUT, cause, "server", 480)

    def _stop_setup(self, call: Call, now: float, trigger: Trigger) -> None:
        self._reject_caller(call, 503, now, "Service Unavailable - server stopping")
        self._cancel_callee(call, now)
        self._release(call, now, CallTag.SERVER_STOP, cdrs.TEMPORARY_FAILURE, "server", 503)

    def _end_max_duration(self, call: Call, now: float, trigger: Trigger) -> None:
        self._bye_both(call, now, CallTag.MAX_DURATION, cdrs.NORMAL_CLEARING, 200)

    def _end_no_ack(self, call: Call, now: float, trigger: Trigger) -> None:
        self._bye_both(call, now, CallTag.NO_ACK, cdrs.TEMPORARY_FAILURE, 200)

    def _end_media_timeout(self, call: Call, now: float, trigger: Trigger) -> None:
        cause = cdrs.RECOVERY_ON_TIMER_EXPIRY
        self._bye_both(call, now, CallTag.MEDIA_TIMEOUT, cause, 200)

    def _end_server_stop(self, call: Call, now: float, trigger: Trigger) -> None:
        self._bye_both(call, now, CallTag.SERVER_STOP, cdrs.NORMAL_CLEARING, 200)

    # ---- helpers of the handlers ---------------------------------------------

    def _bye_both(self, call: Call, now: float, tag: CallTag, cause: int, status: int) -> None:
        for leg in (call.o, call.t):
            self._send_bye(call, leg, now)
        self._release(call, now, tag, cause, "server", status)

    def _cancel_callee(self, call: Call, now: float) -> None:
        """CANCEL the T-side now, or (state CANCELLING) once it has sent a provisional."""
        if call.state is not CallState.CANCELLING:
            self._send_cancel(call, now, Trigger())

    def _release(
        self, call: Call, now: float, tag: CallTag, cause: int, by: str, status: int
    ) -> None:
        call.cancel_timers()
        self.calls.pop(call.uuid, None)
        call.relays.clear()
        self.scheduler.call_at(now + FORGET_AFTER, self._forget, call)
        self.media.release(call.uuid)
        self._write_cdr(call.record, now, by, status, tag, cause)
        self._emit_state(call, now)

    def _forget(self, now: float, call: Call) -> None:
        self.dialogs.pop((call.o.call_id, call.o.local_tag), None)
        self.dialogs.pop((call.t.call_id, call.t.local_tag), None)

    def _write_cdr(
        self, record: CallRecord, now: float, by: str, status: int, tag: CallTag, cause: int
    ) -> None:
        """The one place a CDR is made; unanswered calls only with failed-call CDRs on."""
        cdr = Cdr(
            uuid=record.uuid,
            call_id=record.call_id,
            caller=record.caller,
            dialed=record.dialed,
            callee=record.callee,
            route=record.route,
            start=record.start,
            ring=record.ring,
            answer=record.answer,
            release=self.to_wall(now),
            released_by=by,
            status=status,
            call_tag=tag,
            cause=cause,
        )
        if cdr.answered or self.settings.cdr.failed_call_cdr:
            self.emit(cdr.data(), now)

    def _emit_state(self, call: Call, now: float) -> None:
        if self.settings.cdr.realtime_display:
            r = call.record
            self.emit(CallData(call.o.call_id, r.caller, r.callee, call.state.live), now)

    # ---- message plumbing ----------------------------------------------------

    def _via(self, leg: Leg) -> Via:
        s = self.settings
        params: dict[str, str | None] = {"branch": new_branch(), "rport": None}
        return Via(leg.peer.transport, s.public_address, s.sip_port, params)

    def _contact(self, user: str | None, leg: Leg) -> str:
        """Our Contact on `leg`: the calling user's on the T-side INVITE, else ours."""
        s = self.settings
        suffix = ";transport=tcp" if leg.peer.transport == "TCP" else ""
        return f"<sip:{user or 'sipcloud'}@{s.public_address}:{s.sip_port}{suffix}>"

    def _send(
        self, call: Call, purpose: TxPurpose, request: Request, leg: Leg, now: float
    ) -> ClientTransaction:
        tx = self.layer.send_request(request, leg.peer, now, leg.fallback)
        tx.owner = CallTx(call, purpose)
        return tx

    def _send_bye(self, call: Call, leg: Leg, now: float, copy_from: Request | None = None) -> None:
        bye = leg.request("BYE", self._via(leg), self._contact(None, leg))
        if copy_from is not None:
            _copy_headers(copy_from, bye, _PASSED_HEADERS)
        self._send(call, TxPurpose.BYE, bye, leg, now)

    def _send_ack(self, leg: Leg, body: bytes, ctype: str | None) -> None:
        if leg.ack_cseq is None:
            return
        leg.last_ack = bytes(leg.request("ACK", self._via(leg), None, body, ctype))
        leg.ack_cseq = None
        self.layer.outbox.append(Send(leg.last_ack, leg.peer, leg.fallback))

    def _body(self, call: Call, towards: str, msg: Request | Response) -> tuple[bytes, str | None]:
        if not msg.body:
            return b"", None
        body = self.media.rewrite(call.uuid, towards, msg.body)
        return body, msg.headers.get("Content-Type")

    def _reject(self, tx: ServerTransaction, code: int, phrase: str | None, now: float) -> None:
        tx.respond(make_response(tx.request, code, phrase, to_tag=random_token(6)), now)

    def _reject_caller(self, call: Call, code: int, now: float, phrase: str | None = None) -> None:
        if not call.o_ist.final_sent:
            out = make_response(call.o_ist.request, code, phrase, to_tag=call.o.local_tag)
            call.o_ist.respond(out, now)

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
            out.headers.set("Contact", self._contact(None, leg))
        _copy_headers(resp, out, _PASSED_HEADERS)
        body, ctype = self._body(call, leg.side, resp)
        if body:
            out.headers.set("Content-Type", ctype or "application/sdp")
            out.body = body
        stx.respond(out, now)

    def _relay_response(
        self, call: Call, tx: ClientTransaction, resp: Response, now: float
    ) -> None:
        """A response to an in-dialog request we relayed: answer the original with it."""
        stx = call.relays.get(tx)
        if stx is None or resp.code == 100:
            return
        from_leg = call.t if tx.request.call_id == call.t.call_id else call.o
        to_leg = call.other(from_leg)
        if resp.code >= 200:
            del call.relays[tx]
        if stx.final_sent:
            if 200 <= resp.code < 300 and from_leg.last_ack is not None:
                self.layer.outbox.append(Send(from_leg.last_ack, from_leg.peer, from_leg.fallback))
            return
        if 200 <= resp.code < 300 and tx.method == "INVITE":
            from_leg.ack_cseq = resp.cseq.sequence
            to_leg.ist_waiting_ack = stx
        self._relay_to(call, to_leg, stx, resp, now)


Handler = Callable[[B2BUA, Call, float, Trigger], None]


CallKey = tuple[CallState, CallEvent]
CallEntry = tuple[Handler, CallState]


def _build_table() -> dict[CallKey, CallEntry]:
    """(state, event) -> (handler, next state), for every pair."""
    S, E, B = CallState, CallEvent, B2BUA
    table: dict[CallKey, CallEntry] = {}

    def on(
        states: Iterable[CallState],
        events: Iterable[CallEvent],
        h: Handler,
        to: CallState | None = None,
    ) -> None:
        for state in states:
            for event in events:
                table[(state, event)] = (h, to or state)

    ended = (S.CANCELLING, S.RELEASED)
    # Before the answer.
    on((S.CALLING, S.PROCEEDING), [E.PROVISIONAL], B._relay_provisional, S.PROCEEDING)
    on([S.RINGING], [E.PROVISIONAL], B._relay_provisional)
    on(SETUP_STATES, [E.RINGING], B._ring, S.RINGING)
    on(SETUP_STATES, [E.ANSWERED], B._answer, S.ANSWERED)
    on(SETUP_STATES, [E.REFUSED], B._refused, S.RELEASED)
    on(SETUP_STATES, [E.UNREACHABLE], B._unreachable, S.RELEASED)
    on(SETUP_STATES, [E.CALLEE_BYE], B._callee_left_early, S.RELEASED)
    on(SETUP_STATES, [E.IN_DIALOG], B._refuse_in_dialog)
    on(SETUP_STATES, [E.MAX_DURATION, E.NO_ACK, E.USER_REMOVED, E.MEDIA_TIMEOUT], B._ignore)
    # The caller gives up or the server does: no CANCEL before a provisional (§9.1).
    for event, handler in (
        (E.CANCEL, B._caller_gave_up),
        (E.CALLER_BYE, B._caller_gave_up),
        (E.NO_ANSWER, B._no_answer),
        (E.STOP, B._stop_setup),
    ):
        on([S.CALLING], [event], handler, S.CANCELLING)
        on((S.PROCEEDING, S.RINGING), [event], handler, S.RELEASED)
    # Answered.
    on([S.ANSWERED], [E.ANSWERED], B._resend_ack)
    on([S.ANSWERED], (E.CALLER_BYE, E.CALLEE_BYE), B._hang_up, S.RELEASED)
    on([S.ANSWERED], [E.IN_DIALOG], B._relay_in_dialog)
    on([S.ANSWERED], [E.MAX_DURATION], B._end_max_duration, S.RELEASED)
    on([S.ANSWERED], [E.NO_ACK], B._end_no_ack, S.RELEASED)
    on([S.ANSWERED], [E.MEDIA_TIMEOUT], B._end_media_timeout, S.RELEASED)
    on([S.ANSWERED], (E.STOP, E.USER_REMOVED), B._end_server_stop, S.RELEASED)
    on([S.ANSWERED], (E.PROVISIONAL, E.RINGING, E.REFUSED, E.UNREACHABLE), B._ignore)
    on([S.ANSWERED], (E.CANCEL, E.NO_ANSWER), B._ignore)
    # Released towards the caller; the callee may still be catching up.
    on([S.CANCELLING], (E.PROVISIONAL, E.RINGING), B._send_cancel, S.RELEASED)
    on([S.CANCELLING], (E.REFUSED, E.UNREACHABLE), B._ignore, S.RELEASED)
    on([S.RELEASED], (E.PROVISIONAL, E.RINGING, E.REFUSED, E.UNREACHABLE), B._ignore)
    on(ended, [E.ANSWERED], B._ack_and_bye, S.RELEASED)
    on(ended, [E.IN_DIALOG], B._refuse_in_dialog)
    on(ended, (E.CANCEL, E.CALLER_BYE, E.CALLEE_BYE, E.NO_ANSWER), B._ignore)
    on(ended, (E.MAX_DURATION, E.NO_ACK, E.STOP, E.USER_REMOVED, E.MEDIA_TIMEOUT), B._ignore)
    return table


CALL_TABLE = _build_table()


def transition(
    state: CallState, event: CallEvent, table: Mapping[CallKey, CallEntry] = CALL_TABLE
) -> CallEntry:
    """The handler and next state for (state, event); a pair missing from the table is a bug."""
    entry = table.get((state, event))
    if entry is None:
        raise UnexpectedCallEvent(f"{event.name} in state {state.name}")
    return entry


def _invite_event(code: int) -> CallEvent:
    """What a response (not 100) to the T-side INVITE means for the call."""
    if code in (180, 183):
        return CallEvent.RINGING
    if code < 200:
        return CallEvent.PROVISIONAL
    return CallEvent.ANSWERED if code < 300 else CallEvent.REFUSED


def _max_forwards(req: Request) -> int:
    return req.max_forwards if req.max_forwards is not None else 70


def _copy_headers(src: Request | Response, dst: Request | Response, names: tuple[str, ...]) -> None:
    for name in names:
        for value in src.headers.getlist(name):
            dst.headers.add(name, value)


def _contact_peer(contact: str, peer: Peer) -> Peer | None:
    """The Contact's own address, for stream transports only."""
    if not peer.reliable:
        return None
    try:
        uri = Uri.parse(contact)
    except ValueError:
        return None
    return Peer(peer.transport, uri.host, uri.port or 5060)
