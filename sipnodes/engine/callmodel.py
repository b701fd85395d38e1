"""The values of a call: its states, the events that move it, its two legs.

Half-call model: the O-side leg faces the caller (the server is its UAS), the
T-side leg faces the callee (the server is its UAC). What each (state, event)
pair does is declared in `calls.CALL_TABLE`; this module only holds the data.
"""

from __future__ import annotations

import dataclasses
import enum

from .message import Request, Response, Via
from .sipmsg import Peer, make_request
from .timers import Timer
from .transaction import ClientTransaction, ServerTransaction


class CallState(enum.Enum):
    CALLING = "calling"  # INVITE sent to the callee, nothing but 100 back yet
    PROCEEDING = "proceeding"  # a provisional came back: CANCEL is allowed (§9.1)
    RINGING = "ringing"  # 180/183 seen
    ANSWERED = "answered"  # 2xx relayed to the caller
    CANCELLING = "cancelling"  # released; the callee's CANCEL waits for its first provisional
    RELEASED = "released"

    @property
    def live(self) -> str:
        """The state the live-calls view shows: initiated, ringing, answered, released."""
        return _LIVE[self]


_LIVE = {
    CallState.CALLING: "initiated",
    CallState.PROCEEDING: "initiated",
    CallState.RINGING: "ringing",
    CallState.ANSWERED: "answered",
    CallState.CANCELLING: "released",
    CallState.RELEASED: "released",
}

# The states before the answer, in which the call can still ring or fail.
SETUP_STATES = (CallState.CALLING, CallState.PROCEEDING, CallState.RINGING)


class CallEvent(enum.Enum):
    PROVISIONAL = "provisional"  # 101-199 on the T-side INVITE, other than 180/183
    RINGING = "ringing"  # 180 or 183 on the T-side INVITE
    ANSWERED = "answered"  # 2xx on the T-side INVITE (first or retransmitted)
    REFUSED = "refused"  # 3xx-6xx on the T-side INVITE
    UNREACHABLE = "unreachable"  # Timer B: the callee never answered the INVITE
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


class TxPurpose(enum.Enum):
    """Why the B2BUA sent a client transaction: decides what its responses mean."""

    INVITE = "invite"  # the T-side INVITE that sets the call up
    RELAY = "relay"  # an in-dialog request relayed from the other leg
    BYE = "bye"
    CANCEL = "cancel"


@dataclasses.dataclass(frozen=True, slots=True)
class CallTx:
    """The owner of a client transaction the B2BUA started."""

    call: Call
    purpose: TxPurpose


@dataclasses.dataclass(frozen=True, slots=True)
class Trigger:
    """What came with an event: the message, and the server transaction to answer on."""

    response: Response | None = None
    request: Request | None = None
    tx: ServerTransaction | None = None
    leg: Leg | None = None


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
        )


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


@dataclasses.dataclass(eq=False)
class Call:
    record: CallRecord
    o: Leg
    t: Leg
    o_ist: ServerTransaction
    t_invite: Request | None  # the INVITE sent to the callee, kept while a CANCEL may be needed
    state: CallState = CallState.CALLING
    cancel_reason: list[str] = dataclasses.field(default_factory=list)
    timers: list[Timer] = dataclasses.field(default_factory=list)
    relays: dict[ClientTransaction, ServerTransaction] = dataclasses.field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return self.record.uuid

    def other(self, leg: Leg) -> Leg:
        return self.t if leg is self.o else self.o

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
