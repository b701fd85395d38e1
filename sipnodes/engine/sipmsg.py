"""Small helpers on top of `sipmessage`: strict parsing, responses, ids, peers.

`sipmessage` does the parsing and serialising; this module adds what a server
needs around it: refusing messages that lack mandatory headers (RFC 3261 §8.1.1),
unfolding continuation lines, honouring Content-Length on datagrams, and the
`received`/`rport` fix-up of the top Via (RFC 3581).
"""

from __future__ import annotations

import dataclasses
import os
import re

from sipmessage import URI, Address, CSeq, Message, Request, Response, Via

MAGIC_COOKIE = "z9hG4bK"
MAX_MESSAGE_SIZE = 65535
SERVER_NAME = "sipcloud"

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
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
    600: "Busy Everywhere",
    603: "Decline",
}

_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


class RemoteProtocolError(ValueError):
    """The peer sent something we cannot use (their fault); `status` is what to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def parse(data: bytes) -> Request | Response:
    """Parse one message; raise RemoteProtocolError if it is unusable.

    Requests missing a mandatory header are refused here so that the layers
    above can read Via, From, To, Call-ID and CSeq without checking.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message too large", 513)
    data = data.lstrip(b"\r\n")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise RemoteProtocolError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("headers are not UTF-8") from exc
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # RFC 3261 §7.3.1 header folding
        elif line:
            lines.append(line)
    if not lines:
        raise RemoteProtocolError("empty message")
    for line in lines[1:]:
        if ":" not in line or not line.split(":", 1)[0].strip():
            raise RemoteProtocolError(f"bad header line {line[:40]!r}")
    try:
        message = Message.parse(("\r\n".join(lines)).encode("utf-8") + b"\r\n\r\n" + body)
    except (ValueError, IndexError, KeyError) as exc:
        raise RemoteProtocolError(f"unparsable: {exc}") from exc
    for name in _MANDATORY:
        if message.headers.get(name) is None:
            raise RemoteProtocolError(f"missing {name}")
    try:
        length = message.content_length
        cseq = message.cseq
        first_via = message.headers.getlist("Via")[0]
        # Parsed once here and cached on the message: the layers above read
        # the top Via, From and To many times per message.
        message._top_via = Via.parse_many(first_via)[0]  # type: ignore[union-attr]
        message._from = message.from_address  # type: ignore[union-attr]
        message._to = message.to_address  # type: ignore[union-attr]
    except (ValueError, IndexError, KeyError) as exc:
        raise RemoteProtocolError(f"bad header: {exc}") from exc
    if length is not None:
        if length < 0 or length > len(message.body):
            raise RemoteProtocolError("Content-Length larger than body")
        message.body = message.body[:length]
    if isinstance(message, Request):
        if not _TOKEN.match(message.method):
            raise RemoteProtocolError("bad method")
        if cseq.method != message.method:
            raise RemoteProtocolError("CSeq method does not match request method")
    return message


def serialize(message: Request | Response) -> bytes:
    message.headers.set("Content-Length", str(len(message.body)))
    return bytes(message)


def top_via(message: Message) -> Via:
    cached = getattr(message, "_top_via", None)
    return cached if cached is not None else message.via[0]


def from_addr(message: Message) -> Address:
    cached = getattr(message, "_from", None)
    return cached if cached is not None else message.from_address


def to_addr(message: Message) -> Address:
    cached = getattr(message, "_to", None)
    return cached if cached is not None else message.to_address


def to_tag(message: Message) -> str | None:
    return to_addr(message).parameters.get("tag")


def stamp_via(request: Request, peer: Peer) -> None:
    """Add `received` and `rport` to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    values = request.headers.getlist("Via")
    vias = Via.parse_many(values[0])
    via = vias[0]
    params = via.parameters
    changes: dict[str, str | None] = {}
    if "rport" in params:
        changes["rport"] = str(peer.port)
        changes["received"] = peer.host
    elif via.host != peer.host:
        changes["received"] = peer.host
    if changes:
        vias[0] = dataclasses.replace(via, parameters=params.replace(**changes))
        values[0] = ", ".join(str(v) for v in vias)
        request.headers.setlist("Via", values)
        request._top_via = vias[0]  # type: ignore[attr-defined]


def response_peer(request: Request, peer: Peer) -> Peer:
    """Where to send responses: the source for TCP and rport (RFC 3581), else Via."""
    if peer.reliable:
        return peer
    via = top_via(request)
    if "rport" in via.parameters:
        return peer
    host = via.parameters.get("received") or via.host
    return Peer(peer.transport, host, via.port or 5060)


def make_response(
    request: Request, code: int, phrase: str | None = None, to_tag: str | None = None
) -> Response:
    """A response copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)."""
    response = Response(code=code, phrase=phrase or REASON_PHRASES.get(code, "Unknown"))
    headers = response.headers
    headers.setlist("Via", list(request.headers.getlist("Via")))
    headers.set("From", request.headers["From"])
    to = request.headers["To"]
    if to_tag and code > 100 and to_addr(request).parameters.get("tag") is None:
        to = f"{to};tag={to_tag}"
    headers.set("To", to)
    headers.set("Call-ID", request.headers["Call-ID"])
    headers.set("CSeq", request.headers["CSeq"])
    headers.set("Server", SERVER_NAME)
    return response


def make_request(
    method: str,
    uri: URI | str,
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
    request = Request(method=method, uri=uri if isinstance(uri, URI) else URI.parse(uri))
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


_SHED_METHODS = (b"REGISTER ", b"INVITE ")
_COPIED = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}
_CREDENTIALS = (b"authorization", b"proxy-authorization")


def shed_response(data: bytes, phrase: bytes, retry_after: int) -> bytes | None:
    """A stateless 503 for a new REGISTER/INVITE without credentials, or None.

    Used only under overload, before full parsing, so refusing costs almost
    nothing: it copies the raw Via/From/To/Call-ID/CSeq lines. Requests that
    carry credentials (the second half of a challenge) or a To tag (in a
    dialog) are work already under way and return None to be served normally.
    """
    if not data.startswith(_SHED_METHODS):
        return None
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    out = [b"SIP/2.0 503 " + phrase]
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        key = name.strip().lower()
        if key in _CREDENTIALS:
            return None
        if key in (b"to", b"t") and b";tag=" in value.replace(b" ", b""):
            return None
        if key in _COPIED:
            out.append(line)
    if len(out) < 6:
        return None  # missing mandatory headers: let the parser refuse it
    out.append(b"Retry-After: %d" % retry_after)
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"
