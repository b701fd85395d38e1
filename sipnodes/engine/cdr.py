"""Call detail records: where a call was released (CallTag), why (Q.850 cause), and the CDR.

The O-side (the half-call facing the caller) writes exactly one CDR per call.
FCI is `callTag=<n>;cause=<n>`, followed by what happened on the way
(`CallRecord.features`): `forward=busy:201>202` for each forward (reason, who
forwarded, to whom), `hunt=600` for a hunt group, `pickup=203` when another
user picked the call up. The cause is the callee side's
`Reason: Q.850;cause=N` when it refused the call with 4xx-6xx and sent one,
otherwise the server's own value: `cause_for_status` (one table, RFC 3398
§8.2.6.1 read backwards) or the cause fixed for the release (e.g. 16 for BYE).
"""

from __future__ import annotations

import dataclasses
import enum
import re

from .events import CdrData

NORMAL_CLEARING = 16
USER_BUSY = 17
NO_USER_RESPONDING = 18
NO_ANSWER = 19
UNALLOCATED = 1
NORMAL_UNSPECIFIED = 31
TEMPORARY_FAILURE = 41
RESOURCE_UNAVAILABLE = 47
RECOVERY_ON_TIMER_EXPIRY = 102


class CallTag(enum.IntEnum):
    """Where in the server a call was released (the `callTag` in FCI).

    Each value carries its own docstring (`CallTag.CALLER_BYE.__doc__`).
    """

    def __new__(cls, value: int, doc: str) -> CallTag:
        member = int.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    CALLER_BYE = (1, "The caller hung up an answered call (BYE from the O-side).")
    CALLEE_BYE = (2, "The callee hung up an answered call (BYE from the T-side).")
    CALLER_CANCEL = (3, "The caller gave up before the answer (CANCEL from the O-side).")
    CALLEE_REJECTED = (
        4,
        "The callee side answered the INVITE with a final 3xx-6xx (busy, decline, ...).",
    )
    NO_ANSWER_TIMEOUT = (
        5,
        "Nobody answered within the server's no-answer timeout; the server cancelled.",
    )
    MAX_DURATION = (6, "The answered call reached the server's maximum call duration.")
    SERVER_STOP = (7, "The worker was stopped (SIGTERM) and ended the call.")
    CALLBACK_RELEASE = (
        8,
        "A call-back (IIF) call released by its application server (CANCEL).",
    )
    ROUTING_FAILED = (
        9,
        "The server refused the call itself: unknown number, callee not registered, "
        "call level too low, route type not available, too many hops.",
    )
    CALLEE_UNREACHABLE = (10, "The callee's device did not respond at all (Timer B expired).")
    NO_ACK = (11, "The caller never acknowledged the answer (2xx not ACKed within 64*T1).")
    MEDIA_TIMEOUT = (
        12,
        "The media relay saw no media from either side of the answered call "
        "for the media timeout; the server ended it.",
    )
    NO_MEDIA_PORTS = (
        13,
        "The server refused the call: its media relay port block had no ports left.",
    )
    DO_NOT_DISTURB = (
        14,
        "The callee has do not disturb on and no forwarding on busy; the server answered busy.",
    )
    FORWARD_LOOP = (
        15,
        "The call was forwarded back to a number it had reached, or forwarded too many "
        "times; the server ended it.",
    )
    TRANSFERRED = (
        16,
        "The call was transferred: the party who transferred it left, and the call "
        "between the other party and the transfer target has a CDR of its own.",
    )
    CALLBACK_CALLEE1_FAILED = (
        17,
        "A call-back (IIF) ended because its first party (callee1) did not answer.",
    )
    CALLBACK_CALLEE2_FAILED = (
        18,
        "A call-back (IIF) ended because its second party (callee2) did not answer; "
        "the server hung up on callee1.",
    )
    WEB_PHONE_CLOSED = (
        19,
        "A web phone's page was closed (or lost its connection) during the call; "
        "its gateway ended the call.",
    )


# SIP status -> Q.850 cause (RFC 3398 §8.2.6.1, the SIP-to-ISUP direction).
STATUS_TO_CAUSE: dict[int, int] = {
    400: 41,
    401: 21,
    402: 21,
    403: 21,
    404: 1,
    405: 63,
    406: 79,
    407: 21,
    408: 102,
    410: 22,
    413: 127,
    414: 127,
    415: 79,
    416: 127,
    420: 127,
    421: 127,
    423: 127,
    480: 18,
    481: 41,
    482: 25,
    483: 25,
    484: 28,
    485: 1,
    486: 17,
    487: 127,
    488: 127,
    500: 41,
    501: 79,
    502: 38,
    503: 41,
    504: 102,
    505: 127,
    513: 127,
    600: 17,
    603: 21,
    604: 1,
    606: 58,
}


def cause_for_status(status: int) -> int:
    """Q.850 cause for a final SIP status; 2xx is normal clearing."""
    if 200 <= status < 300:
        return NORMAL_CLEARING
    if status in STATUS_TO_CAUSE:
        return STATUS_TO_CAUSE[status]
    if 500 <= status < 600:
        return TEMPORARY_FAILURE
    return NORMAL_UNSPECIFIED


_REASON = re.compile(r"^\s*Q\.850\s*;(?P<params>.*)$", re.IGNORECASE)


# The Reason (RFC 3326, protocol token "sipcloud") the web phone gateway puts on the BYE or
# CANCEL it sends when its page went away (sipnodes/webphone/sip.py, CLOSED_REASON).
_WEB_PHONE_CLOSED = re.compile(r"^\s*sipcloud\s*;\s*cause\s*=\s*1\b", re.IGNORECASE)


def web_phone_closed(reason_headers: list[str]) -> bool:
    """Whether a BYE or CANCEL says that a web phone's page went away."""
    return any(
        _WEB_PHONE_CLOSED.match(value) for header in reason_headers for value in header.split(",")
    )


def q850_cause(reason_headers: list[str]) -> int | None:
    """The cause of the first `Reason: Q.850;cause=N` value (RFC 3326), if any."""
    for header in reason_headers:
        for value in header.split(","):
            m = _REASON.match(value)
            if not m:
                continue
            for param in m.group("params").split(";"):
                name, _, val = param.partition("=")
                if name.strip().lower() == "cause":
                    try:
                        cause = int(val.strip().strip('"'))
                    except ValueError:
                        return None
                    return cause if 0 < cause < 128 else None
    return None


def release_cause(status: int, reason_headers: list[str]) -> int:
    """Cause for a call the callee side refused with `status`."""
    if status >= 400:
        cause = q850_cause(reason_headers)
        if cause is not None:
            return cause
    return cause_for_status(status)


@dataclasses.dataclass(frozen=True)
class Cdr:
    """The facts of one released call; `data()` derives the rest (answered, talk time, FCI)."""

    uuid: str
    call_id: str
    caller: str
    dialed: str
    callee: str
    route: str
    start: float
    ring: float | None
    answer: float | None
    release: float
    released_by: str  # "caller" | "callee" | "server"
    status: int  # final SIP status the caller got
    call_tag: CallTag
    cause: int
    features: tuple[str, ...] = ()  # "name=value" items appended to the FCI

    @property
    def answered(self) -> bool:
        return self.answer is not None

    @property
    def talk_seconds(self) -> float:
        return round(self.release - self.answer, 3) if self.answer is not None else 0.0

    @property
    def fci(self) -> str:
        return ";".join((f"callTag={int(self.call_tag)}", f"cause={self.cause}", *self.features))

    def data(self) -> CdrData:
        """The CDR event's payload: `CdrData` names the fields, this record supplies them."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(CdrData)}
        return CdrData(**{**values, "call_tag": int(self.call_tag)})
