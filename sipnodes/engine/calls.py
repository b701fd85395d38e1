"""Calls between local users: a B2BUA with the half-call model.

Each call has an O-side leg facing the caller (we are its UAS) and, until the
answer, one branch per device ringing (we are each one's UAC, each a dialog of
its own). Who rings, and who next when nobody answers (forwarding, hunt
groups), is the call's `TargetPlan` (targets.py); every device of a user rings
at once and the first to answer becomes the call's T-side leg, the others get
a CANCEL with `Reason: SIP;cause=200;text="Call completed elsewhere"`.
Requests and responses are re-built on the other leg, never forwarded; the
O-side writes the CDR.

Every decision about a call is one entry of `CALL_TABLE`, keyed by (state,
event): a handler and the next state. The table covers every pair, so a pair
missing from it is a bug (`UnexpectedCallEvent`), never a silent no-op. What
is not a decision (matching a message to its call and branch, relaying an
in-dialog response or a 2xx ACK, cleaning up branches given up) is plumbing
around the table. Feature codes (forwarding, DND, pickup) are dialled like
numbers and handled before routing (features.py).

ACK for a 2xx is relayed end to end: the callee's 2xx is ACKed when the
caller's ACK arrives (carrying its body, so late offers work). Route sets are
not kept: phones talk to the server directly.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

from . import callback, features, sdp
from . import cdr as cdrs
from . import transfer as transfers
from .callback import CallbackOutcome, CallbackRefused, CallbackRequest
from .callmodel import (
    RINGING_STATES,
    SETUP_STATES,
    Branch,
    BranchState,
    Call,
    CallbackState,
    CallEvent,
    CallRecord,
    CallState,
    CallTx,
    Leg,
    Transfer,
    Trigger,
    TxPurpose,
)
from .cdr import CallTag, Cdr
from .config import CallLimits, CdrOptions, Config, FeatureCodes, HuntGroup, Trunk, User
from .dialplan import DialPlan
from .digest import Authenticator, Credentials, Outcome, authorization
from .events import CallData, EventData
from .location import LocationTable
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
from .targets import Directory, Forward, Ring, Step, Stop, TargetPlan
from .targets import Outcome as StageOutcome
from .timers import Scheduler, ToWall
from .transaction import ClientTransaction, ServerTransaction, TransactionLayer

# Headers passed from one leg to the other on requests and responses.
_PASSED_HEADERS = ("Reason", "Warning", "Retry-After", "Allow", "Subject", "Accept")
# Headers of in-dialog requests (INFO, NOTIFY, ...) that the other leg needs too.
_IN_DIALOG_HEADERS = ("Event", "Subscription-State", "Content-Disposition", "Info-Package")
FORGET_AFTER = 32.0  # keep a released call's dialogs for crossing BYEs and ACK retransmissions
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'  # RFC 3326 §2
# Failed branches' responses a caller is better off hearing than others (§16.7 step 6, roughly).
_BUSY = (486, 600)

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
    users: Mapping[str, User] = dataclasses.field(default_factory=dict)
    groups: Mapping[str, HuntGroup] = dataclasses.field(default_factory=dict)
    feature_codes: FeatureCodes = FeatureCodes()
    trunks: Mapping[int, Trunk] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> CallSettings:
        listen = config.listen
        return cls(
            config.public_address,
            listen.sip_port,
            config.realm,
            config.cdr,
            config.call_limits,
            config.users_by_number,
            {g.number: g for g in config.hunt_groups},
            config.feature_codes,
            {t.id: t for t in config.trunks},
        )


class Device(NamedTuple):
    """Where one branch of a call goes: a registered phone, or a trunk."""

    number: str  # the user, or the outside number
    contact: str  # the Request-URI
    peer: Peer
    host: str  # the domain in From and To: ours, or the trunk's
    trunk: Trunk | None


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
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}
        # Feature-code confirmations answered 200, waiting for the ACK to send BYE.
        self.confirmations: dict[tuple[str, str], Leg] = {}
        # DND and forwarding changed by feature codes since the config was rendered.
        self.changed_users: dict[str, User] = {}
        self.cursors: dict[str, int] = {}  # round-robin hunt groups: survives reloads
        # How a call-back ended, for its application server (the core sends the RESPONSE).
        self.on_callback_ended: Callable[[CallbackOutcome], None] = _no_callback_report
        self.configure(settings, auth, dialplan)

    def configure(self, settings: CallSettings, auth: Authenticator, dialplan: DialPlan) -> None:
        """A new config (SIGHUP): calls under way keep going under the new settings."""
        self.settings = settings
        self.auth = auth
        self.dialplan = dialplan
        users = dict(settings.users)
        for number, changed in list(self.changed_users.items()):
            user = users.get(number)
            if user is None or user.settings_changed >= changed.settings_changed:
                del self.changed_users[number]  # the portal has it (or a newer change)
            else:
                users[number] = features.with_call_settings(user, changed)
        self.directory = Directory(users, settings.groups, dialplan, self.cursors)
        # Requests from these sources come from trunks. A host name never matches a source
        # address, so a trunk known by name takes no inbound calls.
        self.trunk_at = {(t.address, t.port): t for t in settings.trunks.values()}
        self.tcp_trunk_at = {t.address: t for t in settings.trunks.values() if t.transport == "TCP"}

    # ---- the table ------------------------------------------------------------

    def _fire(self, call: Call, event: CallEvent, now: float, trigger: Trigger) -> None:
        handler, next_state = transition(call.state, event)
        call.state = next_state
        handler(self, call, now, trigger)

    # ---- new calls ------------------------------------------------------------

    def on_invite(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        """An INVITE outside any dialog: authenticate, then a feature code or a call."""
        trunk = self._trunk_at(peer)
        if trunk is not None:
            self._inbound(req, tx, peer, trunk, now)
            return
        user = self._authenticate(req, tx, now)
        if user is None:
            return
        tx.respond(make_response(req, 100), now)
        dialed = req.uri.user or req.to_address.uri.user or ""
        feature = features.parse(dialed, self.settings.feature_codes)
        if feature is not None:
            self._feature(feature, user, req, tx, peer, now)
            return
        record = CallRecord(
            uuid=str(uuid.uuid4()),
            call_id=req.call_id,
            caller=user.number,
            dialed=dialed,
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
        name = user.display_name or req.from_address.name  # the portal's name comes first
        self._start_call(self._new_call(req, tx, peer, name, record, outcome), now)

    def _trunk_at(self, peer: Peer) -> Trunk | None:
        """The trunk a request comes from: its address and port (UDP: the upstream's own
        socket), or, over TCP, whose source ports are any, its address alone. Never the
        address alone over UDP: another server or phone on that host is no trunk."""
        trunk = self.trunk_at.get((peer.host, peer.port))
        if trunk is None and peer.transport == "TCP":
            trunk = self.tcp_trunk_at.get(peer.host)
        return trunk

    def _inbound(
        self, req: Request, tx: ServerTransaction, peer: Peer, trunk: Trunk, now: float
    ) -> None:
        """A call from a trunk, trusted by its source address, not challenged.

        It reaches the local number its called number maps to (and where that user's
        own forwarding sends calls); only a trunk marked "transit" (a trunk server's
        trunk to a branch) may route calls on to other trunks.
        """
        tx.respond(make_response(req, 100), now)
        dialed = req.uri.user or req.to_address.uri.user or ""
        record = CallRecord(
            uuid=str(uuid.uuid4()),
            call_id=req.call_id,
            caller=req.from_address.uri.user or "anonymous",
            dialed=dialed,
            callee="",
            route="sip_trunk",
            start=self.to_wall(now),
            features=[f"trunk={trunk.id}"],
        )
        plan = self._inbound_plan(trunk, dialed, record)
        if plan is None:
            self._reject(tx, 404, "Not Found - no such number here", now)
            self._write_cdr(record, now, "server", 404, CallTag.ROUTING_FAILED, cdrs.UNALLOCATED)
            return
        self._start_call(self._new_call(req, tx, peer, req.from_address.name, record, plan), now)

    def _inbound_plan(self, trunk: Trunk, dialed: str, record: CallRecord) -> TargetPlan | None:
        if trunk.inbound == "transit":
            decision = self.dialplan.route(dialed, 0)
            if decision.refused:
                return None
            record.callee = decision.number
            return TargetPlan(decision.number, 0, self.directory, decision.trunk)
        callee = trunk.dids.get(dialed, "")
        if not callee and trunk.inbound == "local" and dialed in self.dialplan.local:
            callee = dialed
        callee = callee or trunk.default_user
        if callee not in self.dialplan.local:
            return None
        record.callee = callee
        return TargetPlan(callee, 0, self.directory)

    def _start_call(self, call: Call, now: float) -> None:
        """A new call from a phone or a trunk: ring the first stage of its plan."""
        self.calls[call.uuid] = call
        self._register(call, call.o)
        assert call.o_ist is not None
        call.o_ist.owner = call
        self._start_timer(call, self.settings.limits.no_answer_timeout, CallEvent.NO_ANSWER, now)
        self._follow(call, call.plan.first(now), now, StageOutcome.UNREACHABLE)

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

    def _route(self, req: Request, user: User, record: CallRecord) -> TargetPlan | Refusal:
        """Who the call is for (filling in the record's route and callee), or why not."""
        if _max_forwards(req) <= 0:
            return Refusal(483, "Too Many Hops", 25)
        if not record.dialed:
            return Refusal(484, "Address Incomplete", 28)
        decision = self.dialplan.route(record.dialed, user.call_level)
        record.route = decision.route
        if decision.refused:
            return Refusal(decision.status, decision.reason, decision.cause)
        record.callee = decision.number
        return TargetPlan(decision.number, user.call_level, self.directory, decision.trunk)

    def _new_call(
        self,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        name: str,
        record: CallRecord,
        plan: TargetPlan,
    ) -> Call:
        """`name`: the caller's display name, as callees will see it."""
        o = self._uas_leg(req, peer, "O")
        return Call(record.uuid, record, o, tx, plan, name, offer=req)

    def _uas_leg(self, req: Request, peer: Peer, side: str) -> Leg:
        """The dialog a phone's INVITE to us starts: we answer it with our own tag."""
        try:
            contact = str(req.contact[0].uri) if req.contact else str(req.from_address.uri)
        except (ValueError, IndexError) as exc:
            raise RemoteProtocolError("bad Contact") from exc
        tag = random_token(6)
        return Leg(
            side=side,
            call_id=req.call_id,
            local_tag=tag,
            local_header=f"{req.headers['To']};tag={tag}",
            remote_header=req.headers["From"],
            remote_target=contact,
            peer=peer,
            fallback=_contact_peer(contact, peer),
            routes=_record_routes(req),
        )

    def _follow(self, call: Call, step: Step, now: float, outcome: StageOutcome) -> None:
        """Act on the plan's next step after a stage ended with `outcome` (or before the first).

        Decided here, before the table, so each table entry has one next state.
        """
        if isinstance(step, Ring):
            self._fire(call, CallEvent.REROUTE, now, Trigger(step=step))
        elif step.status:
            self._fire(call, CallEvent.REFUSED, now, Trigger(step=step))
        elif call.best is not None:
            self._fire(call, CallEvent.REFUSED, now, Trigger(response=call.best))
        elif outcome is StageOutcome.NO_ANSWER:
            self._fire(call, CallEvent.NO_ANSWER, now, Trigger())
        elif any(b.state is BranchState.ENDED for b in call.branches):
            self._fire(call, CallEvent.UNREACHABLE, now, Trigger())
        else:  # no device registered
            self._fire(call, CallEvent.REFUSED, now, Trigger(step=NOT_REGISTERED))

    def _start_stage(self, call: Call, step: Ring, now: float) -> None:
        """Ring every device of the stage's users; none registered: the stage failed at once."""
        call.record.callee = call.plan.callee
        devices = self._devices(step)
        if not devices:
            self._follow(
                call, call.plan.next(StageOutcome.UNREACHABLE, now), now, StageOutcome.UNREACHABLE
            )
            return
        try:
            if call.offer is not None and not call.offer.body:
                self.media.reserve(call.uuid)
            body, ctype = self._body(call, "T", call.offer) if call.offer else (b"", None)
        except MediaPortsExhausted:
            self._fire(call, CallEvent.REFUSED, now, Trigger(step=NO_MEDIA_PORTS))
            return
        caller, side = None, "T"
        cb = call.callback
        if cb is not None:  # the AS chose what each party sees; callee1 becomes the O-side
            first = call.state is CallState.CALLBACK
            caller = (cb.request.caller1 if first else cb.request.caller2, "")
            side = "O" if first else "T"
        for device in devices:
            call.branches.append(self._start_branch(call, device, body, ctype, now, caller, side))
        if step.seconds:
            call.stage_timer = self.scheduler.call_at(now + step.seconds, self._stage_timeout, call)
        self._emit_state(call, now)

    def _devices(self, step: Ring) -> list[Device]:
        """Every registered device of the stage's users, or the trunk an outside number takes."""
        if step.trunk:
            trunk = self.settings.trunks.get(step.trunk)
            if trunk is None:
                return []
            number = step.numbers[0]
            suffix = ";transport=tcp" if trunk.transport == "TCP" else ""
            contact = f"sip:{number}@{trunk.address}:{trunk.port}{suffix}"
            peer = Peer(trunk.transport, trunk.address, trunk.port)
            return [Device(number, contact, peer, trunk.address, trunk)]
        domain = self.settings.domain
        return [
            Device(n, b.contact, b.peer, domain, None)
            for n in step.numbers
            for b in self.location.bindings(n)
        ]

    def _start_branch(
        self,
        call: Call,
        device: Device,
        body: bytes,
        ctype: str | None,
        now: float,
        caller: tuple[str, str] | None = None,
        side: str = "T",
    ) -> Branch:
        """INVITE one device as the caller (number, name), or as the call's caller."""
        number, contact, peer, host, trunk = device
        caller_number, name = caller or (call.record.caller, call.caller_name)
        if trunk is not None:  # what this trunk presents upstream
            caller_number = trunk.caller_id or trunk.caller_prefix + caller_number
        display = quoted_string(name) + " " if name else ""
        tag = random_token(6)
        leg = Leg(
            side=side,
            call_id=random_token(12),
            local_tag=tag,
            local_header=f"{display}<sip:{caller_number}@{host}>;tag={tag}",
            remote_header=f"<sip:{number}@{host}>",
            remote_target=contact,
            peer=peer,
            fallback=_contact_peer(contact, peer),
        )
        invite = leg.request(
            "INVITE", self._via(leg), self._contact(caller_number, leg), body, ctype
        )
        if caller is None and call.o_ist is not None:
            req = call.o_ist.request
            invite.headers.set("Max-Forwards", str(_max_forwards(req) - 1))
            _copy_headers(req, invite, _PASSED_HEADERS)
        branch = Branch(leg=leg, number=number, invite=invite, trunk=trunk)
        self._register(call, leg)
        tx = self.layer.send_request(invite, leg.peer, now, leg.fallback)
        tx.owner = CallTx(call, TxPurpose.INVITE, branch, leg)
        return branch

    def _stage_timeout(self, now: float, call: Call) -> None:
        call.stage_timer = None
        if call.state in RINGING_STATES:
            self._give_up_branches(call, now)
            self._follow(
                call, call.plan.next(StageOutcome.NO_ANSWER, now), now, StageOutcome.NO_ANSWER
            )

    # ---- feature codes ----------------------------------------------------------

    def _feature(
        self,
        feature: features.Feature,
        user: User,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        now: float,
    ) -> None:
        if feature.name in features.PICKUP:
            self._pickup(feature, user, req, tx, peer, now)
            return
        current = self.directory.users.get(user.number, user)
        if feature.number:
            decision = self.dialplan.route(feature.number, user.call_level)
            if decision.status == 404:
                self._reject(tx, 404, "Not Found - no such number to forward to", now)
                return
            if decision.number == user.number:
                self._reject(tx, 482, "Loop Detected - forwarding to yourself", now)
                return
        changed = features.apply(feature, current, self.to_wall(now))
        self.changed_users[user.number] = changed
        self.directory.users = {**self.directory.users, user.number: changed}
        self.emit(features.settings_data(changed), now)
        self._confirm(req, tx, peer, now)

    def _confirm(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        """A feature code done: answer 200 (media refused), BYE once the phone ACKs."""
        leg = self._uas_leg(req, peer, "O")
        out = make_response(req, 200, to_tag=leg.local_tag)
        out.headers.set("Contact", self._contact(None, leg))
        _copy_headers(req, out, ("Record-Route",))
        if req.body:
            out.headers.set("Content-Type", "application/sdp")
            out.body = sdp.refused(req.body, self.settings.public_address)
        tx.respond(out, now)
        leg.ist_waiting_ack = tx
        key = (leg.call_id, leg.local_tag)
        self.confirmations[key] = leg
        self.scheduler.call_at(now + FORGET_AFTER, self._forget_confirmation, key)

    def _forget_confirmation(self, now: float, key: tuple[str, str]) -> None:
        self.confirmations.pop(key, None)

    def _pickup(
        self,
        feature: features.Feature,
        user: User,
        req: Request,
        tx: ServerTransaction,
        peer: Peer,
        now: float,
    ) -> None:
        """Answer another user's ringing call here: the call's T-side becomes this phone."""
        group = self.directory.users.get(user.number, user).pickup_group
        for call in sorted(self.calls.values(), key=lambda c: c.record.start):
            if call.state not in SETUP_STATES or call.record.caller == user.number:
                continue
            if call.o_ist is None:  # a call-back has no caller's offer to answer with
                continue
            ringing = {b.number for b in call.ringing()} - {user.number}
            if any(features.may_pick_up(feature, n, group, self.directory.users) for n in ringing):
                leg = self._uas_leg(req, peer, "T")
                trigger = Trigger(request=req, tx=tx, leg=leg, user=user.number)
                self._fire(call, CallEvent.PICKED_UP, now, trigger)
                return
        self._reject(tx, 404, "Not Found - no ringing call to pick up", now)

    # ---- inputs from the transaction layer -----------------------------------

    def on_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        owner = tx.owner
        if not isinstance(owner, CallTx):
            return
        call = owner.call
        purpose = owner.purpose
        if purpose is TxPurpose.RELAY:
            self._relay_response(call, tx, resp, now)
        elif owner.branch is not None:
            transfer = call.transfer
            if transfer is not None and owner.branch in transfer.branches:
                self._on_transfer_branch_response(call, owner.branch, resp, now)
            else:
                self._on_branch_response(call, owner.branch, resp, now)
        elif purpose in (TxPurpose.TRANSFER, TxPurpose.REPOINT) and resp.code >= 200:
            self._on_reinvite_response(call, owner, resp, now)

    def _on_branch_response(self, call: Call, branch: Branch, resp: Response, now: float) -> None:
        """Keep the branch's own state, then tell the call what the response means for it."""
        trigger = Trigger(response=resp, branch=branch)
        code = resp.code
        if branch.state is BranchState.CANCEL_PENDING and code < 200:
            branch.state = BranchState.ENDED
            self._send_cancel(call, branch, now)
            return
        if code == 100:  # CANCEL is allowed from now on (§9.1); nothing for the caller
            if branch.state is BranchState.CALLING:
                branch.state = BranchState.EARLY
            return
        if 200 <= code < 300:
            if call.t is branch.leg:  # a retransmission of the answer
                self._fire(call, CallEvent.ANSWERED, now, trigger)
            elif branch.alive and call.state in RINGING_STATES:
                branch.state = BranchState.ENDED
                self._fire(call, CallEvent.ANSWERED, now, trigger)
            else:  # this device answered after the call went elsewhere or ended (§9.1)
                branch.state = BranchState.ENDED
                self._ack_and_bye(call, branch, resp, now)
            return
        if not branch.alive:
            if code >= 200:
                branch.state = BranchState.ENDED
            return
        if code < 200:
            branch.state = BranchState.EARLY
            self._fire(call, _provisional_event(code), now, trigger)
            return
        if code in (401, 407) and self._answer_challenge(call, branch, resp, now):
            return
        branch.state = BranchState.ENDED
        if code >= 600:  # "nobody here will take it" (§16.7): not even other devices
            self._fire(call, CallEvent.REFUSED, now, trigger)
        else:
            self._branch_failed(call, resp, now)

    def _answer_challenge(self, call: Call, branch: Branch, resp: Response, now: float) -> bool:
        """A trunk's 401/407: the INVITE once more, with the trunk's account's credentials."""
        trunk = branch.trunk
        if trunk is None or trunk.registration is None or branch.challenged:
            return False
        account = trunk.registration
        creds = Credentials(account.auth_user or account.user, account.password, account.realm)
        www = resp.code == 401
        old = branch.invite
        answer = None
        for challenge in resp.headers.getlist("WWW-Authenticate" if www else "Proxy-Authenticate"):
            answer = answer or authorization(challenge, "INVITE", str(old.uri), creds)
        if answer is None:
            return False
        leg = branch.leg
        ctype = old.headers.get("Content-Type")
        invite = leg.request("INVITE", self._via(leg), old.headers.get("Contact"), old.body, ctype)
        invite.headers.set("Max-Forwards", old.headers.get("Max-Forwards") or "70")
        _copy_headers(old, invite, _PASSED_HEADERS)
        invite.headers.set("Authorization" if www else "Proxy-Authorization", answer)
        branch.invite, branch.challenged = invite, True
        tx = self.layer.send_request(invite, leg.peer, now, leg.fallback)
        tx.owner = CallTx(call, TxPurpose.INVITE, branch, leg)
        return True

    def _branch_failed(self, call: Call, resp: Response | None, now: float) -> None:
        """One device is out; once none rings, the stage failed and the plan says what next."""
        if resp is not None and (call.best is None or resp.code in _BUSY):
            call.best = resp
        if call.ringing() or call.state not in RINGING_STATES:
            return
        call.cancel_stage_timer()
        busy = call.best is not None and call.best.code in _BUSY
        outcome = StageOutcome.BUSY if busy else StageOutcome.UNREACHABLE
        self._follow(call, call.plan.next(outcome, now), now, outcome)

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        owner = tx.owner
        if isinstance(owner, Call):  # Timer L: our 2xx to the caller was never ACKed
            self._fire(owner, CallEvent.NO_ACK, now, Trigger())
        elif isinstance(owner, CallTx) and owner.branch is not None:
            branch = owner.branch  # Timer B: this device never answered the INVITE
            was_ringing = branch.alive
            branch.state = BranchState.ENDED
            if was_ringing:
                self._branch_failed(owner.call, None, now)
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
        key = (req.call_id, req.to_address.tag or "")
        confirmation = self.confirmations.pop(key, None)
        if confirmation is not None:
            self._end_confirmation(confirmation, now)
            return
        found = self.dialogs.get(key)
        if found is None:
            return
        call, leg = found
        if leg.ist_waiting_ack is not None:
            leg.ist_waiting_ack.receive_ack(now)
            leg.ist_waiting_ack = None
            other = call.other(leg)
            body, ctype = self._body(call, other.side, req)
            self._send_ack(other, body, ctype)

    def _end_confirmation(self, leg: Leg, now: float) -> None:
        if leg.ist_waiting_ack is not None:
            leg.ist_waiting_ack.receive_ack(now)
        bye = leg.request("BYE", self._via(leg), self._contact(None, leg))
        self.layer.send_request(bye, leg.peer, now, leg.fallback)

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
        key = (req.call_id, req.to_address.tag or "")
        if req.method == "BYE" and self.confirmations.pop(key, None) is not None:
            tx.respond(make_response(req, 200), now)  # the phone hung up the confirmation
            return
        found = self.dialogs.get(key)
        if found is None:
            tx.respond(make_response(req, 481), now)
            return
        call, leg = found
        if leg is not call.o and leg is not call.t:  # a device's early dialog, or a party gone
            self._in_side_dialog(call, leg, req, tx, now)
            return
        trigger = Trigger(request=req, tx=tx, leg=leg)
        if req.method == "BYE":
            tx.respond(make_response(req, 200), now)
            event = CallEvent.CALLER_BYE if leg is call.o else CallEvent.CALLEE_BYE
            self._fire(call, event, now, trigger)
        elif req.method == "REFER":
            self._fire(call, CallEvent.REFER, now, trigger)
        else:
            self._fire(call, CallEvent.IN_DIALOG, now, trigger)

    def _in_side_dialog(
        self, call: Call, leg: Leg, req: Request, tx: ServerTransaction, now: float
    ) -> None:
        """A request on a device's early dialog (BYE takes the device out of the call), or
        from a party that has left it (a transferor's BYE crossing ours)."""
        if req.method != "BYE":
            tx.respond(make_response(req, 491 if req.method == "INVITE" else 481), now)
            return
        tx.respond(make_response(req, 200), now)
        branch = next((b for b in call.branches if b.leg is leg), None)
        if branch is not None and branch.alive:
            branch.state = BranchState.ENDED
            self._branch_failed(call, None, now)

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

    def _ring_stage(self, call: Call, now: float, trigger: Trigger) -> None:
        """The plan's next stage: tell the caller of a forward (181), ring the new devices."""
        step = trigger.step
        assert isinstance(step, Ring)
        self._give_up_branches(call, now)
        features, group = call.record.features, call.plan.group
        if group is not None and f"hunt={group.number}" not in features:
            features.append(f"hunt={group.number}")
        if step.trunk and f"trunk={step.trunk}" not in features:
            features.append(f"trunk={step.trunk}")
        if step.forward is not None:
            call.record.features.append(f"forward={step.forward.fci}")
            self._tell_forwarded(call, step.forward, now)
        self._start_stage(call, step, now)

    def _tell_forwarded(self, call: Call, fwd: Forward, now: float) -> None:
        """181 with Call-Info: who forwarded the call, why, and to whom."""
        if call.o_ist is not None:
            out = make_response(call.o_ist.request, 181, to_tag=call.o.local_tag)
            host = self.settings.domain
            out.headers.set(
                "Call-Info",
                f"<sip:{fwd.by}@{host}>;purpose=info;reason={fwd.reason};forwarded-to={fwd.to}",
            )
            call.o_ist.respond(out, now)

    def _relay_provisional(self, call: Call, now: float, trigger: Trigger) -> None:
        assert trigger.response is not None
        if call.o_ist is not None:
            self._relay_to(call, call.o, call.o_ist, trigger.response, now)

    def _ring(self, call: Call, now: float, trigger: Trigger) -> None:
        if call.record.ring is None:
            call.record.ring = self.to_wall(now)
            self._emit_state(call, now)
        self._relay_provisional(call, now, trigger)

    def _answer(self, call: Call, now: float, trigger: Trigger) -> None:
        resp, branch = trigger.response, trigger.branch
        assert resp is not None and branch is not None
        t = call.t = branch.leg
        self._learn_remote(t, resp)
        call.record.callee = branch.number
        call.record.answer = self.to_wall(now)
        call.cancel_reason = [COMPLETED_ELSEWHERE]
        self._give_up_branches(call, now)
        t.ack_cseq = resp.cseq.sequence
        if call.o_ist is None:  # a call-back: callee1 now gets callee2's session
            self._send_ack(t, b"", None)
            self._repoint(call, call.o, resp, now)
        else:
            call.o.ist_waiting_ack = call.o_ist
            self._relay_to(call, call.o, call.o_ist, resp, now)
        self._answered(call, now)

    def _answered(self, call: Call, now: float) -> None:
        call.cancel_timers()
        seconds = self.settings.limits.max_call_duration
        if call.callback is not None and call.callback.request.maxduration:
            seconds = call.callback.request.maxduration
        self._start_timer(call, seconds, CallEvent.MAX_DURATION, now)
        self._emit_state(call, now)

    def _picked_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """Another user's phone takes the ringing call: each side's offer answers the other's.

        The caller's INVITE and the picking phone's INVITE both carry offers; with the
        same codecs on both phones (the usual case) each is a fine answer to the other.
        """
        req, tx, leg = trigger.request, trigger.tx, trigger.leg
        assert req is not None and tx is not None and leg is not None
        call.cancel_reason = [COMPLETED_ELSEWHERE]
        self._give_up_branches(call, now)
        call.t = leg
        self._register(call, leg)
        call.record.callee = trigger.user
        call.record.features.append(f"pickup={trigger.user}")
        call.record.answer = self.to_wall(now)
        tx.owner = call  # its 2xx must be ACKed (Timer L -> NO_ACK)
        assert call.o_ist is not None
        for stx, this, offer in ((tx, leg, call.o_ist.request), (call.o_ist, call.o, req)):
            out = make_response(stx.request, 200, to_tag=this.local_tag)
            out.headers.set("Contact", self._contact(None, this))
            _copy_headers(stx.request, out, ("Record-Route",))
            body, ctype = self._body(call, this.side, offer)
            if body:
                out.headers.set("Content-Type", ctype or "application/sdp")
                out.body = this.sdp = body
            stx.respond(out, now)
            this.ist_waiting_ack = stx
        self._answered(call, now)

    def _refuse_pickup(self, call: Call, now: float, trigger: Trigger) -> None:
        assert trigger.tx is not None
        self._reject(trigger.tx, 404, "Not Found - no ringing call to pick up", now)

    # ---- call-back (IIF): the application server's calls -------------------------

    def start_callback(self, request: CallbackRequest, now: float) -> None:
        """Call callee1, then callee2, and connect them; CallbackRefused says why not."""
        if any(
            c.callback and c.callback.request.callid == request.callid for c in self.calls.values()
        ):
            raise CallbackRefused(callback.RESULT_CALLID_IN_USE, "callid already in use")
        routes = []
        for name, number in (("callee1", request.callee1), ("callee2", request.callee2)):
            decision = self.dialplan.route(number, CALLBACK_LEVEL)
            if decision.refused:
                reason = f"{name} {number}: {decision.status} {decision.reason}"
                raise CallbackRefused(callback.RESULT_NUMBER_REFUSED, reason)
            routes.append(decision)
        record = CallRecord(
            uuid=str(uuid.uuid4()),
            call_id=f"callback-{request.callid}",
            caller=routes[0].number,
            dialed=request.callee2,
            callee=routes[1].number,
            route=routes[1].route,
            start=self.to_wall(now),
            features=[f"callback={request.callid}"],
        )
        plan = TargetPlan(routes[0].number, CALLBACK_LEVEL, self.directory)
        o = Leg("O", "", "", "", "", "", Peer("UDP", "", 0))  # callee1's leg, once it answers
        call = Call(
            record.uuid, record, o, None, plan, "", None, CallbackState(request, routes[1].number)
        )
        call.state = CallState.CALLBACK
        self.calls[call.uuid] = call
        self._start_timer(call, self.settings.limits.no_answer_timeout, CallEvent.NO_ANSWER, now)
        # Rung from the timer, so the AS has its ACK before anything about the call.
        self.scheduler.call_at(now, self._ring_first_party, call)

    def _ring_first_party(self, now: float, call: Call) -> None:
        if call.state is CallState.CALLBACK:
            self._follow(call, call.plan.first(now), now, StageOutcome.UNREACHABLE)

    def cancel_callback(self, callid: str, now: float) -> bool:
        """The AS's CANCEL: end that call-back at whatever stage it is."""
        for call in list(self.calls.values()):
            if call.callback is not None and call.callback.request.callid == callid:
                self._fire(call, CallEvent.AS_RELEASE, now, Trigger())
                return True
        return False

    def _first_party_answered(self, call: Call, now: float, trigger: Trigger) -> None:
        """callee1 answered: hold it (an inactive answer) and ring callee2 with its offer."""
        resp, branch, cb = trigger.response, trigger.branch, call.callback
        assert resp is not None and branch is not None and cb is not None
        leg = call.o = branch.leg
        self._learn_remote(leg, resp)
        cb.answer1 = self.to_wall(now)
        call.cancel_reason = [COMPLETED_ELSEWHERE]
        self._give_up_branches(call, now)
        leg.ack_cseq = resp.cseq.sequence
        held = sdp.inactive(resp.body)
        self._send_ack(leg, held, "application/sdp" if held else None)
        call.offer = resp
        call.cancel_timers()
        self._start_timer(call, self.settings.limits.no_answer_timeout, CallEvent.NO_ANSWER, now)
        call.plan = TargetPlan(cb.callee2, CALLBACK_LEVEL, self.directory)
        self._follow(call, call.plan.first(now), now, StageOutcome.UNREACHABLE)

    def _as_gave_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """The AS cancelled the call-back before the two parties were connected."""
        self._give_up_branches(call, now)
        self._reject_caller(call, 487, now)
        self._release(call, now, CallTag.CALLBACK_RELEASE, cdrs.NORMAL_CLEARING, "server", 487)

    def _end_by_as(self, call: Call, now: float, trigger: Trigger) -> None:
        self._bye_both(call, now, CallTag.CALLBACK_RELEASE, cdrs.NORMAL_CLEARING, 200)

    def _callback_ended(self, call: Call, tag: CallTag, cause: int, now: float) -> CallTag:
        """Tell the AS how its call-back ended; the CDR's call tag for a failed one."""
        cb = call.callback
        assert cb is not None
        r = call.record
        if r.answer is not None:
            result = callback.RESPONSE_CONNECTED
        elif tag is CallTag.CALLBACK_RELEASE:
            result = callback.RESPONSE_CANCELLED
        elif cb.answer1 is None:
            result = callback.RESPONSE_CALLEE1_FAILED
            tag = tag if tag in _CALLBACK_KEPT_TAGS else CallTag.CALLBACK_CALLEE1_FAILED
        else:
            result = callback.RESPONSE_CALLEE2_FAILED
            tag = tag if tag in _CALLBACK_KEPT_TAGS else CallTag.CALLBACK_CALLEE2_FAILED
        release = self.to_wall(now)
        duration = round(release - r.answer, 3) if r.answer is not None else 0.0
        outcome = CallbackOutcome(cb.request.callid, result, cause, duration, cb.answer1, r.answer)
        self.on_callback_ended(outcome)
        return tag

    # ---- transfer (the table's actions and their plumbing) ----------------------

    def _start_transfer(self, call: Call, now: float, trigger: Trigger) -> None:
        """REFER on an answered call: accept it, then ring the target or take over its call."""
        req, tx, leg = trigger.request, trigger.tx, trigger.leg
        assert req is not None and tx is not None and leg is not None
        if call.transfer is not None:
            tx.respond(make_response(req, 491, "Request Pending - a transfer is under way"), now)
            return
        try:
            target = transfers.refer_target(req)
        except RemoteProtocolError as exc:
            tx.respond(make_response(req, exc.status, f"Bad Request - {exc}"[:60]), now)
            return
        tx.respond(make_response(req, 202), now)
        by = call.record.caller if leg is call.o else call.record.callee
        kind = "attended" if target.replaces else "blind"
        transfer = call.transfer = Transfer(leg, by, kind, target.number)
        self._notify(call, leg, 100, "Trying", now)
        if target.replaces is not None:
            self._take_over(call, transfer, target.replaces, now)
        else:
            self._ring_target(call, transfer, now)

    def _ring_target(self, call: Call, transfer: Transfer, now: float) -> None:
        """Blind transfer: ring every device of the target as the transferred party."""
        user = self.directory.users.get(transfer.by)
        level = user.call_level if user else 0
        decision = self.dialplan.route(transfer.dialed, level)
        step = (
            Stop(decision.status, decision.reason)
            if decision.refused
            else TargetPlan(decision.number, level, self.directory).first(now)
        )
        devices = self._devices(step) if isinstance(step, Ring) else []
        if not devices:
            failure = step if isinstance(step, Stop) and step.status else NOT_REGISTERED
            self._fire(call, CallEvent.TRANSFER_FAILED, now, Trigger(step=failure))
            return
        stays = call.other(transfer.transferor)
        number = call.record.callee if stays is call.t else call.record.caller
        stays_user = self.directory.users.get(number)
        caller = (number, stays_user.display_name if stays_user else "")
        offer = sdp.sendrecv(transfer.transferor.sdp)
        ctype = "application/sdp" if offer else None
        side = transfer.transferor.side
        for device in devices:
            branch = self._start_branch(call, device, offer, ctype, now, caller, side)
            transfer.branches.append(branch)
        seconds = self.settings.limits.no_answer_timeout
        if seconds:
            timer = self.scheduler.call_at(now + seconds, self._transfer_timeout, call, transfer)
            call.timers.append(timer)

    def _transfer_timeout(self, now: float, call: Call, transfer: Transfer) -> None:
        if call.transfer is transfer:
            self._fire(call, CallEvent.TRANSFER_FAILED, now, Trigger(step=NO_ANSWER))

    def _take_over(
        self, call: Call, transfer: Transfer, replaces: transfers.Replaces, now: float
    ) -> None:
        """Attended transfer: move the target's leg of the transferor's other call to this one."""
        found = self.dialogs.get((replaces.call_id, replaces.to_tag)) or self.dialogs.get(
            (replaces.call_id, replaces.from_tag)
        )
        if found is None or found[0] is call or found[0].state is not CallState.ANSWERED:
            self._fire(call, CallEvent.TRANSFER_FAILED, now, Trigger(step=NO_SUCH_CALL))
            return
        other, replaced_leg = found
        if replaced_leg is not other.o and replaced_leg is not other.t:  # a leg already gone
            self._fire(call, CallEvent.TRANSFER_FAILED, now, Trigger(step=NO_SUCH_CALL))
            return
        target_leg = other.other(replaced_leg)
        transfer.replaced, transfer.target_leg = other, target_leg
        offer = sdp.sendrecv(transfer.transferor.sdp)
        ctype = "application/sdp" if offer else None
        via, contact = self._via(target_leg), self._contact(None, target_leg)
        reinvite = target_leg.request("INVITE", via, contact, offer, ctype)
        self._send(call, TxPurpose.TRANSFER, reinvite, target_leg, now)

    def _on_transfer_branch_response(
        self, call: Call, branch: Branch, resp: Response, now: float
    ) -> None:
        transfer = call.transfer
        assert transfer is not None
        if branch.state is BranchState.CANCEL_PENDING and resp.code < 200:
            branch.state = BranchState.ENDED
            self._send_cancel(call, branch, now)
        elif resp.code < 200:
            if branch.state is BranchState.CALLING:
                branch.state = BranchState.EARLY
        elif resp.code < 300:
            was_ringing = branch.alive
            branch.state = BranchState.ENDED
            if was_ringing:
                self._fire(
                    call, CallEvent.TRANSFER_DONE, now, Trigger(response=resp, branch=branch)
                )
            else:
                self._ack_and_bye(call, branch, resp, now)
        elif branch.alive:
            branch.state = BranchState.ENDED
            if not any(b.alive for b in transfer.branches):
                self._fire(call, CallEvent.TRANSFER_FAILED, now, Trigger(response=resp))

    def _on_reinvite_response(self, call: Call, owner: CallTx, resp: Response, now: float) -> None:
        """A final response to a re-INVITE of ours: ACK a 2xx; the attended transfer's decides."""
        leg = owner.leg
        assert leg is not None
        if resp.code < 300:
            leg.ack_cseq = resp.cseq.sequence
            self._send_ack(leg, b"", None)
        if owner.purpose is TxPurpose.TRANSFER:
            event = CallEvent.TRANSFER_DONE if resp.code < 300 else CallEvent.TRANSFER_FAILED
            self._fire(call, event, now, Trigger(response=resp, leg=leg))
        elif resp.code < 300 and resp.body:
            self.media.rewrite(call.uuid, call.other(leg).side, resp.body)  # where it listens now

    def _complete_transfer(self, call: Call, now: float, trigger: Trigger) -> None:
        """The target answered: the transferred party now talks to it; the transferor leaves."""
        transfer, resp = call.transfer, trigger.response
        assert transfer is not None and resp is not None
        call.transfer = None
        gone = transfer.transferor
        stays = call.other(gone)
        if trigger.branch is not None:  # blind
            target, number = trigger.branch.leg, trigger.branch.number
            self._learn_remote(target, resp)
            target.ack_cseq = resp.cseq.sequence
            self._send_ack(target, b"", None)
            call.cancel_reason = [COMPLETED_ELSEWHERE]
            self._give_up(call, transfer.branches, now)
        else:  # attended
            assert transfer.target_leg is not None and transfer.replaced is not None
            target, replaced = transfer.target_leg, transfer.replaced
            number = replaced.record.callee if target is replaced.t else replaced.record.caller
            self._fire(replaced, CallEvent.REPLACED, now, Trigger(leg=target, user=transfer.by))
        target.side = gone.side
        self._register(call, target)
        self._notify(call, gone, 200, "OK", now)
        self._send_bye(call, gone, now)
        feature = f"transfer={transfer.kind}:{transfer.by}"
        call.record.features.append(feature)
        by = "caller" if gone is call.o else "callee"
        self._write_cdr(call.record, now, by, 200, CallTag.TRANSFERRED, cdrs.NORMAL_CLEARING)
        self._emit_live(call, now, "released")
        if gone is call.o:
            call.o = target
        else:
            call.t = target
        stays_number = call.record.callee if stays is call.t else call.record.caller
        call.record = CallRecord(
            uuid=str(uuid.uuid4()),
            call_id=call.o.call_id,
            caller=stays_number,
            dialed=transfer.dialed,
            callee=number,
            route="local_user",
            start=self.to_wall(now),
            answer=self.to_wall(now),
            features=[feature],
        )
        self._repoint(call, stays, resp, now)
        self._emit_state(call, now)

    def _repoint(self, call: Call, leg: Leg, answer: Response, now: float) -> None:
        """re-INVITE the transferred party with the target's session description."""
        body, ctype = self._body(call, leg.side, answer)
        reinvite = leg.request("INVITE", self._via(leg), self._contact(None, leg), body, ctype)
        self._send(call, TxPurpose.REPOINT, reinvite, leg, now)

    def _transfer_failed(self, call: Call, now: float, trigger: Trigger) -> None:
        """Nobody took the transfer: tell the transferor; the call goes on as it was."""
        transfer = call.transfer
        assert transfer is not None
        call.transfer = None
        self._give_up(call, transfer.branches, now)
        resp, step = trigger.response, trigger.step
        if resp is not None:
            code, phrase = resp.code, resp.phrase
        else:
            assert isinstance(step, Stop)
            code, phrase = step.status, step.phrase
        self._notify(call, transfer.transferor, code, phrase, now)

    def _end_replaced(self, call: Call, now: float, trigger: Trigger) -> None:
        """Attended transfer: the target left this call for the transferred party's."""
        target = trigger.leg
        assert target is not None
        gone = call.other(target)
        self._send_bye(call, gone, now)
        call.record.features.append(f"transfer=attended:{trigger.user}")
        by = "caller" if gone is call.o else "callee"
        self._release(call, now, CallTag.TRANSFERRED, cdrs.NORMAL_CLEARING, by, 200)

    def _refuse_refer(self, call: Call, now: float, trigger: Trigger) -> None:
        req, tx = trigger.request, trigger.tx
        assert req is not None and tx is not None
        tx.respond(
            make_response(req, 403, "Forbidden - only an answered call can be transferred"), now
        )

    def _notify(self, call: Call, leg: Leg, code: int, phrase: str, now: float) -> None:
        """Transfer progress to the transferor (RFC 3515 §2.4.4); final codes end it."""
        body = transfers.sipfrag(code, phrase)
        notify = leg.request(
            "NOTIFY", self._via(leg), self._contact(None, leg), body, transfers.SIPFRAG
        )
        notify.headers.set("Event", "refer")
        state = "active;expires=60" if code < 200 else "terminated;reason=noresource"
        notify.headers.set("Subscription-State", state)
        self._send(call, TxPurpose.NOTIFY, notify, leg, now)

    def _resend_ack(self, call: Call, now: float, trigger: Trigger) -> None:
        t = call.callee_leg
        if t.last_ack is not None:  # a retransmitted 2xx: our ACK was lost
            self.layer.outbox.append(Send(t.last_ack, t.peer, t.fallback))

    def _ack_and_bye(self, call: Call, branch: Branch, resp: Response, now: float) -> None:
        """A device answered after we gave up on it (§9.1): ACK its 2xx, then BYE."""
        leg = branch.leg
        self._learn_remote(leg, resp)
        leg.ack_cseq = resp.cseq.sequence
        self._send_ack(leg, b"", None)
        self._send_bye(call, leg, now)

    def _send_cancel(self, call: Call, branch: Branch, now: float) -> None:
        cancel = request_on_invite(branch.invite, "CANCEL")
        for value in call.cancel_reason:
            cancel.headers.add("Reason", value)
        self._send(call, TxPurpose.CANCEL, cancel, branch.leg, now)

    def _refused(self, call: Call, now: float, trigger: Trigger) -> None:
        """The call ends unanswered: on a device's final response, or the server's `Stop`."""
        self._give_up_branches(call, now)
        step, resp = trigger.step, trigger.response
        if isinstance(step, Stop):
            self._reject_caller(call, step.status, now, step.phrase)
            self._release(call, now, step.tag, step.cause, "server", step.status)
            return
        assert resp is not None
        if call.o_ist is None:
            self._reject_caller(call, resp.code, now)
        else:
            self._relay_to(call, call.o, call.o_ist, resp, now)
        cause = cdrs.release_cause(resp.code, resp.headers.getlist("Reason"))
        self._release(call, now, CallTag.CALLEE_REJECTED, cause, "callee", resp.code)

    def _unreachable(self, call: Call, now: float, trigger: Trigger) -> None:
        self._reject_caller(call, 408, now)
        self._release(call, now, CallTag.CALLEE_UNREACHABLE, cdrs.NO_USER_RESPONDING, "server", 408)

    def _caller_gave_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """CANCEL, or BYE on the early dialog, from the caller before the answer."""
        self._reject_caller(call, 487, now)
        cause, tag = cdrs.NORMAL_CLEARING, CallTag.CALLER_CANCEL
        if trigger.request is not None and trigger.request.method == "CANCEL":
            reasons = trigger.request.headers.getlist("Reason")
            call.cancel_reason = reasons
            cause = cdrs.q850_cause(reasons) or cause
            if cdrs.web_phone_closed(reasons):
                tag = CallTag.WEB_PHONE_CLOSED
        self._give_up_branches(call, now)
        self._release(call, now, tag, cause, "caller", 487)

    def _hang_up(self, call: Call, now: float, trigger: Trigger) -> None:
        """BYE on an answered call: pass it to the other leg."""
        assert trigger.request is not None and trigger.leg is not None
        self._send_bye(call, call.other(trigger.leg), now, copy_from=trigger.request)
        by_caller = trigger.leg is call.o
        tag = CallTag.CALLER_BYE if by_caller else CallTag.CALLEE_BYE
        if cdrs.web_phone_closed(trigger.request.headers.getlist("Reason")):
            tag = CallTag.WEB_PHONE_CLOSED
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
        self._give_up_branches(call, now)
        cause = cdrs.NO_ANSWER if call.record.ring is not None else cdrs.NO_USER_RESPONDING
        self._release(call, now, CallTag.NO_ANSWER_TIMEOUT, cause, "server", 480)

    def _stop_setup(self, call: Call, now: float, trigger: Trigger) -> None:
        self._reject_caller(call, 503, now, "Service Unavailable - server stopping")
        self._give_up_branches(call, now)
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
        for leg in (call.o, call.callee_leg):
            self._send_bye(call, leg, now)
        self._release(call, now, tag, cause, "server", status)

    def _give_up_branches(self, call: Call, now: float) -> None:
        call.cancel_stage_timer()
        self._give_up(call, call.branches, now)

    def _give_up(self, call: Call, branches: list[Branch], now: float) -> None:
        """CANCEL every device still ringing, or once it has sent a provisional (§9.1)."""
        for branch in branches:
            if not branch.alive:
                continue
            if branch.state is BranchState.EARLY:
                branch.state = BranchState.ENDED
                self._send_cancel(call, branch, now)
            else:
                branch.state = BranchState.CANCEL_PENDING

    def _release(
        self, call: Call, now: float, tag: CallTag, cause: int, by: str, status: int
    ) -> None:
        if call.transfer is not None:
            self._give_up(call, call.transfer.branches, now)
            call.transfer = None
        call.cancel_timers()
        if call.callback is not None:
            tag = self._callback_ended(call, tag, cause, now)
        self.calls.pop(call.uuid, None)
        call.relays.clear()
        self.scheduler.call_at(now + FORGET_AFTER, self._forget, call)
        self.media.release(call.uuid)
        self._write_cdr(call.record, now, by, status, tag, cause)
        self._emit_state(call, now)

    def _register(self, call: Call, leg: Leg) -> None:
        """Requests on `leg`'s dialog now belong to `call`."""
        self.dialogs[(leg.call_id, leg.local_tag)] = (call, leg)
        call.legs.append(leg)

    def _forget(self, now: float, call: Call) -> None:
        """Drop the call's dialogs; a leg a transfer moved to another call stays with it.

        Also the caller's INVITE transaction's link back to the call: the two point
        at each other, and a cycle would leave the call to the cyclic GC, whose
        collections of a busy worker's old objects stall it for 100+ ms."""
        if call.o_ist is not None and call.o_ist.owner is call:
            call.o_ist.owner = None
        for leg in call.legs:
            key = (leg.call_id, leg.local_tag)
            found = self.dialogs.get(key)
            if found is not None and found[0] is call:
                del self.dialogs[key]

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
            features=tuple(record.features),
        )
        if cdr.answered or self.settings.cdr.failed_call_cdr:
            self.emit(cdr.data(), now)

    def _emit_state(self, call: Call, now: float) -> None:
        self._emit_live(call, now, call.state.live)

    def _emit_live(self, call: Call, now: float, state: str) -> None:
        if self.settings.cdr.realtime_display:
            r = call.record
            self.emit(CallData(r.call_id, r.caller, r.callee, state), now)

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
        tx.owner = CallTx(call, purpose, leg=leg)
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
        """The caller's INVITE gets `code`; a call-back's callee1, if it answered, a BYE."""
        ist = call.o_ist
        if ist is None:
            if call.callback is not None and call.callback.answer1 is not None:
                self._send_bye(call, call.o, now)
        elif not ist.final_sent:
            out = make_response(ist.request, code, phrase, to_tag=call.o.local_tag)
            ist.respond(out, now)

    def _learn_remote(self, leg: Leg, resp: Response) -> None:
        """The callee's tag, target and route set, from its answer (§12.1.2)."""
        leg.remote_header = resp.headers["To"]
        leg.routes = _record_routes(resp)[::-1]
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
            _copy_headers(stx.request, out, ("Record-Route",))  # §12.1.1
        _copy_headers(resp, out, _PASSED_HEADERS)
        body, ctype = self._body(call, leg.side, resp)
        if body:
            out.headers.set("Content-Type", ctype or "application/sdp")
            out.body = leg.sdp = body
        stx.respond(out, now)

    def _relay_response(
        self, call: Call, tx: ClientTransaction, resp: Response, now: float
    ) -> None:
        """A response to an in-dialog request we relayed: answer the original with it."""
        stx = call.relays.get(tx)
        owner = tx.owner
        if stx is None or resp.code == 100 or not isinstance(owner, CallTx) or owner.leg is None:
            return
        from_leg = owner.leg
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

NOT_REGISTERED = Stop(480, "Temporarily Unavailable", 20, CallTag.ROUTING_FAILED)
# A call-back's numbers are the trusted AS's choice: no caller's call level applies.
CALLBACK_LEVEL = 1 << 30
# Call tags a failed call-back keeps; others become "callee1/callee2 failed".
_CALLBACK_KEPT_TAGS = (CallTag.SERVER_STOP, CallTag.NO_MEDIA_PORTS, CallTag.CALLBACK_RELEASE)
NO_ANSWER = Stop(480, "Temporarily Unavailable - no answer")
NO_SUCH_CALL = Stop(481, "Call/Transaction Does Not Exist")
NO_MEDIA_PORTS = Stop(503, "Service Unavailable - no media ports", 47, CallTag.NO_MEDIA_PORTS)


CallKey = tuple[CallState, CallEvent]
CallEntry = tuple[Handler, CallState]


class On(Protocol):
    """Declares `handler` (and the next state, default: stay) for every state x event."""

    def __call__(
        self,
        states: Iterable[CallState],
        events: Iterable[CallEvent],
        h: Handler,
        to: CallState | None = None,
    ) -> None: ...


def _build_table() -> dict[CallKey, CallEntry]:
    """(state, event) -> (handler, next state), for every pair."""
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

    for entries in (_call_back_entries, _before_answer_entries, _after_answer_entries):
        entries(on)
    return table


def _call_back_entries(on: On) -> None:
    """A call-back ringing callee1: nobody to tell of provisionals yet."""
    S, E, B = CallState, CallEvent, B2BUA
    cb = [S.CALLBACK]
    on(cb, (E.PROVISIONAL, E.RINGING), B._ignore)
    on(cb, [E.REROUTE], B._ring_stage)
    on(cb, [E.ANSWERED], B._first_party_answered, S.CALLING)
    on(cb, [E.REFUSED], B._refused, S.RELEASED)
    on(cb, [E.UNREACHABLE], B._unreachable, S.RELEASED)
    on(cb, [E.NO_ANSWER], B._no_answer, S.RELEASED)
    on(cb, [E.STOP], B._stop_setup, S.RELEASED)
    on(cb, [E.AS_RELEASE], B._as_gave_up, S.RELEASED)
    on(cb, (E.CANCEL, E.CALLER_BYE, E.CALLEE_BYE, E.MAX_DURATION, E.NO_ACK), B._ignore)
    on(cb, (E.USER_REMOVED, E.MEDIA_TIMEOUT, E.TRANSFER_DONE, E.TRANSFER_FAILED), B._ignore)
    on(cb, [E.REPLACED], B._ignore)
    on(cb, [E.IN_DIALOG], B._refuse_in_dialog)
    on(cb, [E.REFER], B._refuse_refer)
    on(cb, [E.PICKED_UP], B._refuse_pickup)


def _before_answer_entries(on: On) -> None:
    """Before the answer: devices ring, the plan goes on, or the call ends."""
    S, E, B = CallState, CallEvent, B2BUA
    on((S.CALLING, S.PROCEEDING), [E.PROVISIONAL], B._relay_provisional, S.PROCEEDING)
    on([S.RINGING], [E.PROVISIONAL], B._relay_provisional)
    on(SETUP_STATES, [E.RINGING], B._ring, S.RINGING)
    on(SETUP_STATES, [E.REROUTE], B._ring_stage)
    on(SETUP_STATES, [E.ANSWERED], B._answer, S.ANSWERED)
    on(SETUP_STATES, [E.PICKED_UP], B._picked_up, S.ANSWERED)
    on(SETUP_STATES, [E.REFUSED], B._refused, S.RELEASED)
    on(SETUP_STATES, [E.UNREACHABLE], B._unreachable, S.RELEASED)
    on(SETUP_STATES, (E.CANCEL, E.CALLER_BYE), B._caller_gave_up, S.RELEASED)
    on(SETUP_STATES, [E.NO_ANSWER], B._no_answer, S.RELEASED)
    on(SETUP_STATES, [E.STOP], B._stop_setup, S.RELEASED)
    on(SETUP_STATES, [E.AS_RELEASE], B._as_gave_up, S.RELEASED)
    on(SETUP_STATES, [E.IN_DIALOG], B._refuse_in_dialog)
    # A device's BYE on its early dialog is branch plumbing; no T-side leg exists yet.
    on(SETUP_STATES, [E.CALLEE_BYE], B._ignore)
    on(SETUP_STATES, [E.MAX_DURATION, E.NO_ACK, E.USER_REMOVED, E.MEDIA_TIMEOUT], B._ignore)
    on(SETUP_STATES, [E.REFER], B._refuse_refer)
    # Transfers start only on answered calls.
    on(SETUP_STATES, (E.TRANSFER_DONE, E.TRANSFER_FAILED, E.REPLACED), B._ignore)


def _after_answer_entries(on: On) -> None:
    """Answered, then released (devices may still be catching up)."""
    S, E, B = CallState, CallEvent, B2BUA
    on([S.ANSWERED], [E.ANSWERED], B._resend_ack)
    on([S.ANSWERED], (E.CALLER_BYE, E.CALLEE_BYE), B._hang_up, S.RELEASED)
    on([S.ANSWERED], [E.IN_DIALOG], B._relay_in_dialog)
    on([S.ANSWERED], [E.REFER], B._start_transfer)
    on([S.ANSWERED], [E.TRANSFER_DONE], B._complete_transfer)
    on([S.ANSWERED], [E.TRANSFER_FAILED], B._transfer_failed)
    on([S.ANSWERED], [E.REPLACED], B._end_replaced, S.RELEASED)
    on([S.ANSWERED], [E.MAX_DURATION], B._end_max_duration, S.RELEASED)
    on([S.ANSWERED], [E.NO_ACK], B._end_no_ack, S.RELEASED)
    on([S.ANSWERED], [E.MEDIA_TIMEOUT], B._end_media_timeout, S.RELEASED)
    on([S.ANSWERED], (E.STOP, E.USER_REMOVED), B._end_server_stop, S.RELEASED)
    on([S.ANSWERED], [E.AS_RELEASE], B._end_by_as, S.RELEASED)
    on([S.ANSWERED], (E.PROVISIONAL, E.RINGING, E.REROUTE, E.REFUSED, E.UNREACHABLE), B._ignore)
    on([S.ANSWERED], (E.CANCEL, E.NO_ANSWER), B._ignore)
    on([S.ANSWERED, S.RELEASED], [E.PICKED_UP], B._refuse_pickup)
    # Released; devices may still be catching up (their CANCELs are branch plumbing).
    on([S.RELEASED], [E.ANSWERED], B._resend_ack)
    on([S.RELEASED], (E.PROVISIONAL, E.RINGING, E.REROUTE, E.REFUSED, E.UNREACHABLE), B._ignore)
    on([S.RELEASED], [E.IN_DIALOG], B._refuse_in_dialog)
    on([S.RELEASED], [E.REFER], B._refuse_refer)
    on([S.RELEASED], (E.TRANSFER_DONE, E.TRANSFER_FAILED, E.REPLACED, E.AS_RELEASE), B._ignore)
    on([S.RELEASED], (E.CANCEL, E.CALLER_BYE, E.CALLEE_BYE, E.NO_ANSWER), B._ignore)
    on([S.RELEASED], (E.MAX_DURATION, E.NO_ACK, E.STOP, E.USER_REMOVED, E.MEDIA_TIMEOUT), B._ignore)


CALL_TABLE = _build_table()


def transition(
    state: CallState, event: CallEvent, table: Mapping[CallKey, CallEntry] = CALL_TABLE
) -> CallEntry:
    """The handler and next state for (state, event); a pair missing from the table is a bug."""
    entry = table.get((state, event))
    if entry is None:
        raise UnexpectedCallEvent(f"{event.name} in state {state.name}")
    return entry


def _no_callback_report(outcome: CallbackOutcome) -> None:
    return None


def _provisional_event(code: int) -> CallEvent:
    return CallEvent.RINGING if code in (180, 183) else CallEvent.PROVISIONAL


def _max_forwards(req: Request) -> int:
    return req.max_forwards if req.max_forwards is not None else 70


def _copy_headers(src: Request | Response, dst: Request | Response, names: tuple[str, ...]) -> None:
    for name in names:
        for value in src.headers.getlist(name):
            dst.headers.add(name, value)


def _record_routes(msg: Request | Response) -> list[str]:
    """Every Record-Route entry of `msg`, in order (one header line may hold several)."""
    return [e.strip() for h in msg.headers.getlist("Record-Route") for e in _ROUTE.findall(h)]


_ROUTE = re.compile(r"<[^>]*>[^,]*")


def _contact_peer(contact: str, peer: Peer) -> Peer | None:
    """The Contact's own address, for stream transports only."""
    if not peer.reliable:
        return None
    try:
        uri = Uri.parse(contact)
    except ValueError:
        return None
    return Peer(peer.transport, uri.host, uri.port or 5060)
