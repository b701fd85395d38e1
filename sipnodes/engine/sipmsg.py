"""What a SIP server needs around its messages: peers, ids, responses, requests.

Messages themselves (parsing, headers, the values inside them) are in
`message.py`; this module builds the ones the server sends, does the
`received`/`rport` fix-up of the top Via (RFC 3581) and the stateless 503 of
an overloaded worker.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import NamedTuple

from .message import CSeq, Request, Response, Uri, Via

MAGIC_COOKIE = "z9hG4bK"
SERVER_NAME = "sipcloud"

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to: transport ("UDP"/"TCP"), host and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """An outgoing message for the shell to write."""

    data: bytes
    peer: Peer
    # Stream transports: where to connect if no connection to `peer` is open
    # (a device's Contact address, when its registration connection has gone).
    fallback: Peer | None = None


def random_token(nbytes: int = 8) -> str:
    return os.urandom(nbytes).hex()


def new_branch() -> str:
    return MAGIC_COOKIE + random_token(8)


def stamp_via(request: Request, peer: Peer) -> None:
    """Add `received` and `rport` to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    via = request.top_via
    params = via.parameters
    if "rport" in params:
        changed = {**params, "received": peer.host, "rport": str(peer.port)}
    elif via.host != peer.host:
        changed = {**params, "received": peer.host}
    else:
        return
    vias = list(request.via)
    vias[0] = Via(via.transport, via.host, via.port, changed)  # not _replace: interpreted
    request.set_vias(vias)


def response_peer(request: Request, peer: Peer) -> Peer:
    """Where to send responses: the source for TCP and rport (RFC 3581), else Via."""
    if peer.reliable:
        return peer
    via = request.top_via
    if "rport" in via.parameters:
        return peer
    host = via.parameters.get("received") or via.host
    return Peer(peer.transport, host, via.port or 5060)


def make_response(
    request: Request, code: int, phrase: str | None = None, to_tag: str | None = None
) -> Response:
    """A response copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)."""
    headers = request.headers.subset("Via", "From", "To", "Call-ID", "CSeq")
    if to_tag and code > 100 and request.to_address.tag is None:
        headers.set("To", f"{headers['To']};tag={to_tag}")
    headers.set("Server", SERVER_NAME)
    return Response(code, phrase or REASON_PHRASES.get(code, "Unknown"), headers)


def make_request(
    method: str,
    uri: Uri | str,
    *,
    via: Via | str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    contact: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    routes: list[str] | None = None,
) -> Request:
    """Every request the server sends: in-dialog, new INVITEs, CANCEL and ACK."""
    request = Request(method, uri)
    h = request.headers
    h.set("Via", str(via))
    h.set("Max-Forwards", "70")
    h.set("From", from_)
    h.set("To", to)
    h.set("Call-ID", call_id)
    h.set("CSeq", str(CSeq(cseq, method)))
    for route in routes or ():
        h.add("Route", route)
    if contact:
        h.set("Contact", contact)
    h.set("User-Agent", SERVER_NAME)
    if body:
        h.set("Content-Type", content_type or "application/sdp")
        request.body = body
    return request


def request_on_invite(invite: Request, method: str, to: str | None = None) -> Request:
    """CANCEL (§9.1) or the ACK of a non-2xx (§17.1.1.3) for an INVITE we sent.

    Both reuse the INVITE's Request-URI, top Via, From, Call-ID, CSeq number and
    Route set; the ACK takes To from the response (it carries the callee's tag).
    """
    h = invite.headers
    return make_request(
        method,
        invite.uri,
        via=h.getlist("Via")[0],
        from_=h["From"],
        to=to if to is not None else h["To"],
        call_id=h["Call-ID"],
        cseq=invite.cseq.sequence,
        routes=h.getlist("Route"),
    )


_COPIED = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}
_CREDENTIALS = {b"authorization", b"proxy-authorization"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The To tag of every stateless overload answer starts with this (not hex, so no tag
# of `random_token` does): what a peer sends back on it is known without parsing.
SHED_TAG = b"shed"


class Shed(NamedTuple):
    """An overloaded worker's stateless answer: `response` (b"": none, for an ACK)."""

    response: bytes
    new_work: bool  # a new REGISTER/INVITE: refused only beyond the admitted share


def shed_response(data: bytes, retry_after: int) -> Shed | None:
    """Under overload: a stateless answer to a request that is no work under way, or None.

    Reads the raw header lines, no parsing, so an overloaded worker spends its
    time on the work already under way. New REGISTER/INVITE without
    credentials get 503 with Retry-After. What a peer sends back on such a 503
    (SIPp sends a BYE after every call it aborts, an ACK after an INVITE's) and
    a BYE outside any dialog get 481, an ACK nothing. Requests with credentials
    (the second half of a challenge) or in a dialog return None and are served
    normally, as does anything folded or unusual.
    """
    bye = data.startswith(b"BYE ")
    new_work = data.startswith((b"REGISTER ", b"INVITE "))
    ack = data.startswith(b"ACK ")
    if not (bye or new_work or ack):
        return None
    head = data.partition(b"\r\n\r\n")[0]
    copied: list[bytes] = []
    to_tag: bytes | None = None
    for line in head.split(b"\r\n")[1:]:
        if not line or line[0] in b" \t":
            return None  # folded: let the parser read it
        name = _raw_name(line)
        if name in _COPIED:
            if name in (b"to", b"t"):
                to_tag = _tag(line.partition(b":")[2])
                if to_tag is None:  # the same for a retransmission, as §8.2.7 asks
                    line += b";tag=%s%08x" % (SHED_TAG, hash(head) & 0xFFFFFFFF)
            copied.append(line)
        elif name in _CREDENTIALS and new_work:
            return None
    if to_tag is not None and not to_tag.startswith(SHED_TAG):
        return None  # in a dialog
    if len(copied) < 5:
        return None  # missing mandatory headers: let the parser refuse it
    if ack:
        return Shed(b"", False) if to_tag is not None else None
    if new_work and to_tag is None:
        status = b"503 Service Unavailable - overloaded"
        return Shed(_raw_response(status, copied, b"Retry-After: %d" % retry_after), True)
    return Shed(_raw_response(b"481 Call/Transaction Does Not Exist", copied), False)


def _tag(to_value: bytes) -> bytes | None:
    """The tag parameter of a To header value (after its URI), or None."""
    if b">" in to_value:
        to_value = to_value.rpartition(b">")[2]
    for param in to_value.split(b";")[1:]:
        key, _, tag = param.partition(b"=")
        if key.strip(b" \t").lower() == b"tag":
            return tag.strip(b" \t")
    return None


def refusal_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A stateless answer to a request too broken to parse, or None (RFC 4475 §3.1.2).

    Built from the raw header lines, like `shed_response`; only when a Via line
    is there to answer along. Responses and ACKs are never answered.
    """
    if data.startswith(b"SIP/") or data.lstrip(b"\r\n").startswith(b"ACK "):
        return None
    lines = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    copied = _copied_lines(lines)
    if not any(_raw_name(line) in (b"via", b"v") for line in copied):
        return None
    phrase = REASON_PHRASES.get(status, "Bad Request")
    if status == 400:
        phrase = _CONTROL.sub("?", f"{phrase} - {reason}")[:80]
    return _raw_response(f"{status} {phrase}".encode(errors="replace"), copied)


def _copied_lines(lines: list[bytes]) -> list[bytes]:
    """The Via, From, To, Call-ID and CSeq lines a response repeats (§8.2.6.2)."""
    return [line for line in lines[1:] if _raw_name(line) in _COPIED]


def _raw_name(line: bytes) -> bytes:
    """The lower-cased name of a raw header line (`b"via"` of `b"Via : SIP/2.0/UDP ..."`)."""
    return line.partition(b":")[0].strip().lower()


def _raw_response(status_line: bytes, copied: list[bytes], *extra: bytes) -> bytes:
    lines = [b"SIP/2.0 " + status_line, *copied, *extra, b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
