"""The values of a call: its states, the events that move it, its two legs.

Half-call model: the O-side leg faces the caller (the server is its UAS), the
T-side leg faces the callee (the server is its UAC). Until the answer the T-side
is a set of branches, one per device ringing (parallel ringing, hunt groups);
the branch that answers becomes the call's T-side leg. What each (state, event)
pair does is declared in `calls.CALL_TABLE`; this module only holds the data.
"""

from __future__ import annotations

import dataclasses
import enum

from .callback import CallbackRequest
from .config import Trunk
from .message import Request, Response, Via
from .sipmsg import Peer, make_request
from .targets import Step, TargetPlan
from .timers import Timer
from .transaction import ClientTransaction, ServerTransaction


class CallState(enum.Enum):
    CALLBACK = "callback"  # a call-back (IIF): calling its first party, callee1
    CALLING = "calling"  # devices being called, nothing but 100 back yet
    PROCEEDING = "proceeding"  # a provisional came back
    RINGING = "ringing"  # 180/183 seen
    ANSWERED = "answered"  # 2xx relayed to the caller
    RELEASED = "released"

    @property
    def live(self) -> str:
        """The state the live-calls view shows: initiated, ringing, answered, released."""
        return _LIVE[self]


_LIVE = {
    CallState.CALLBACK: "initiated",
    CallState.CALLING: "initiated",
    CallState.PROCEEDING: "initiated",
    CallState.RINGING: "ringing",
    CallState.ANSWERED: "answered",
    CallState.RELEASED: "released",
}

# The states before the answer, in which the call can still ring or fail.
SETUP_STATES = (CallState.CALLING, CallState.PROCEEDING, CallState.RINGING)
# The states in which devices ring for the call (a call-back's callee1 too).
RINGING_STATES = (CallState.CALLBACK, *SETUP_STATES)


class CallEvent(enum.Enum):
    PROVISIONAL = "provisional"  # 101-199 on a branch's INVITE, other than 180/183
    RINGING = "ringing"  # 180 or 183 on a branch's INVITE
    ANSWERED = "answered"  # 2xx on a branch's INVITE (first or retransmitted)
    REROUTE = "reroute"  # the stage failed and the target plan rings someone else
    REFUSED = "refused"  # 6xx from a branch, or the stage failed with nobody else to ring
    UNREACHABLE = "unreachable"  # nobody else to ring and no device ever responded
    PICKED_UP = "picked_up"  # another user picked the ringing call up
    REFER = "refer"  # a party asks to transfer the other one (RFC 3515)
    TRANSFER_DONE = "transfer_done"  # the transfer target answered
    TRANSFER_FAILED = "transfer_failed"  # nobody at the target answered
    REPLACED = "replaced"  # attended transfer: this call's target went to another call
    AS_RELEASE = "as_release"  # the call-back's application server cancelled it
    CANCEL = "cancel"  # CANCEL from the caller
    CALLER_BYE = "caller_bye"
    CALLEE_BYE = "callee_bye"
    IN_DIALOG = "in_dialog"  # re-INVITE, INFO, UPDATE, ... from either leg
    NO_ANSWER = "no_answer"  # the server's no-answer timeout
    MAX_DURATION = "max_duration"  # the server's maximum call duration
    NO_ACK = "no_ack"  # the caller never ACKed the 2xx (Timer L)
    STOP = "stop"  # the worker is stopping
    USER_REMOVED = "user_removed"  # caller or callee deleted from the config
    MEDIA_TIMEOUT = "media_timeout"  # the relay saw no media on either side for the timeout


class BranchState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing but 100 back yet: no CANCEL yet (§9.1)
    EARLY = "early"  # a provisional came back: CANCEL is allowed
    CANCEL_PENDING = "cancel_pending"  # given up; CANCEL goes out on the first provisional
    ENDED = "ended"  # final response, Timer B, or CANCEL sent


class TxPurpose(enum.Enum):
    """Why the B2BUA sent a client transaction: decides what its responses mean."""

    INVITE = "invite"  # the T-side INVITE that sets the call up
    RELAY = "relay"  # an in-dialog request relayed from the other leg
    BYE = "bye"
    CANCEL = "cancel"
    NOTIFY = "notify"  # transfer progress to the transferor
    TRANSFER = "transfer"  # attended transfer: the re-INVITE moving the target to this call
    REPOINT = "repoint"  # the re-INVITE pointing the transferred party at the target


@dataclasses.dataclass(frozen=True, slots=True)
class CallTx:
    """The owner of a client transaction the B2BUA started: on which leg, for which branch."""

    call: Call
    purpose: TxPurpose
    branch: Branch | None = None
    leg: Leg | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Trigger:
    """What came with an event: the message, and the server transaction to answer on."""

    response: Response | None = None
    request: Request | None = None
    tx: ServerTransaction | None = None
    leg: Leg | None = None
    branch: Branch | None = None
    step: Step | None = None  # the target plan's next step (REROUTE, REFUSED by the server)
    user: str = ""  # PICKED_UP: the user who picked the call up


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
    sdp: bytes = b""  # the last session description we sent on this leg (transfer offers it)
    # The dialog's route set (RFC 3261 §12.1): proxies that record-routed, e.g. a trunk's.
    routes: list[str] = dataclasses.field(default_factory=list)

    def request(
        self,
        method: str,
        via: Via,
        contact: str | None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The next request of this dialog (§12.2.1.1); ACK reuses the INVITE's CSeq."""
        if method == "ACK":
            assert self.ack_cseq is not None
            cseq = self.ack_cseq
        else:
            self.local_cseq += 1
            cseq = self.local_cseq
        if body and content_type in (None, "application/sdp"):
            self.sdp = body
        return make_request(
            method,
            self.remote_target,
            via=via,
            from_=self.local_header,
            to=self.remote_header,
            call_id=self.call_id,
            cseq=cseq,
            contact=contact,
            body=body,
            content_type=content_type,
            routes=self.routes,
        )


@dataclasses.dataclass(eq=False)
class Branch:
    """One device a call rings: its INVITE, kept while a CANCEL may be needed."""

    leg: Leg
    number: str  # the user whose device this is, or the outside number
    invite: Request
    state: BranchState = BranchState.CALLING
    trunk: Trunk | None = None  # the trunk it goes through; its account answers challenges
    challenged: bool = False  # the INVITE was sent again with credentials

    @property
    def alive(self) -> bool:
        return self.state in (BranchState.CALLING, BranchState.EARLY)


@dataclasses.dataclass(eq=False)
class Transfer:
    """A REFER under way; the call goes on unchanged until the target answers."""

    transferor: Leg  # who sent the REFER: NOTIFYs go there, and it leaves the call
    by: str  # the transferor's number
    kind: str  # "blind" | "attended"
    dialed: str  # the Refer-To number
    branches: list[Branch] = dataclasses.field(default_factory=list)  # blind: devices ringing
    replaced: Call | None = None  # attended: the transferor's call with the target
    target_leg: Leg | None = None  # attended: the target's leg in `replaced`


@dataclasses.dataclass(eq=False)
class CallbackState:
    """What an application server asked for (IIF), and when the first party answered."""

    request: CallbackRequest
    callee2: str  # callee2 as the dial plan routes it
    answer1: float | None = None  # UTC epoch seconds


@dataclasses.dataclass(eq=False)
class CallRecord:
    """What the CDR reports about a call; times are UTC epoch seconds."""

    uuid: str
    call_id: str  # the caller's (O-side) Call-ID
    caller: str
    dialed: str
    callee: str
    route: str
    start: float
    ring: float | None = None
    answer: float | None = None
    features: list[str] = dataclasses.field(default_factory=list)  # `cdr.Cdr.features`


@dataclasses.dataclass(eq=False)
class Call:
    uuid: str  # the call's key in the B2BUA and the relay; a transfer starts a new record
    record: CallRecord
    o: Leg
    o_ist: ServerTransaction | None  # the caller's INVITE; None for a call-back
    plan: TargetPlan
    caller_name: str  # the display name callees see
    offer: Request | Response | None  # its body is offered to every device rung
    callback: CallbackState | None = None
    t: Leg | None = None  # the branch that answered (or a user who picked the call up)
    branches: list[Branch] = dataclasses.field(default_factory=list)
    best: Response | None = None  # the final response of a failed branch to pass on (§16.7)
    state: CallState = CallState.CALLING
    cancel_reason: list[str] = dataclasses.field(default_factory=list)
    timers: list[Timer] = dataclasses.field(default_factory=list)
    stage_timer: Timer | None = None
    transfer: Transfer | None = None
    legs: list[Leg] = dataclasses.field(default_factory=list)  # every dialog it has had
    relays: dict[ClientTransaction, ServerTransaction] = dataclasses.field(default_factory=dict)

    @property
    def callee_leg(self) -> Leg:
        assert self.t is not None, "the call has no callee leg before the answer"
        return self.t

    def other(self, leg: Leg) -> Leg:
        return self.callee_leg if leg is self.o else self.o

    def ringing(self) -> list[Branch]:
        return [b for b in self.branches if b.alive]

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.cancel_stage_timer()

    def cancel_stage_timer(self) -> None:
        if self.stage_timer is not None:
            self.stage_timer.cancel()
            self.stage_timer = None
