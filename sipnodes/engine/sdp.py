"""SDP (RFC 8866) as values, and the rewrite that anchors media at the relay.

Only what the relay needs is parsed: the connection address, each m-line's
media, port and protocol, its RTCP port (RFC 3605 `a=rtcp:`, RFC 5761
`a=rtcp-mux`) and its direction. Every other line is kept as text, in order,
so `write(parse(body))` gives back the body (with CRLF line ends).
`anchor` is a pure function from one description to another: the relay
decides the ports, this module only writes them.
"""

from __future__ import annotations

import dataclasses

# m-line media the relay forwards; others get port 0 (RFC 3264 §6: stream refused).
RELAYED_MEDIA = ("audio", "video")
HOLD_ADDRESSES = ("0.0.0.0", "::")  # RFC 2543 hold: "don't send me anything"
# ICE (RFC 8839): meaningless once the relay is in the path, and would steer
# the phones around it. Dropped at session and media level.
ICE_ATTRIBUTES = (
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The body is not an SDP the relay can read (the sender's fault)."""


@dataclasses.dataclass(slots=True)
class MediaLine:
    """One m= section: its m-line split up, the lines under it as text."""

    media: str
    port: int
    proto: str
    formats: str  # the rest of the m-line, untouched
    lines: list[str]

    @property
    def relayable(self) -> bool:
        """Audio or video over RTP (plain, SRTP, AVPF, DTLS-SRTP): the relay forwards it."""
        return self.media in RELAYED_MEDIA and "RTP" in self.proto

    @property
    def rtcp_mux(self) -> bool:
        return "a=rtcp-mux" in self.lines

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=name:value` (or "" for a flag) of this section."""
        for line in self.lines:
            if line == f"a={name}":
                return ""
            if line.startswith(f"a={name}:"):
                return line[len(name) + 3 :]
        return None

    @property
    def direction(self) -> str:
        for line in self.lines:
            if line[2:] in DIRECTIONS and line.startswith("a="):
                return line[2:]
        return "sendrecv"


@dataclasses.dataclass(slots=True)
class Session:
    """A whole description: the session-level lines, then the m= sections."""

    head: list[str]
    media: list[MediaLine]

    def address(self, index: int) -> str | None:
        """The connection address of m-line `index` (its own c= first, else the session's)."""
        for lines in (self.media[index].lines, self.head):
            for line in lines:
                if line.startswith("c="):
                    return _connection_address(line)
        return None

    def rtcp_port(self, index: int) -> int:
        """Where the sender of this description wants RTCP for m-line `index`."""
        m = self.media[index]
        if m.rtcp_mux:
            return m.port
        value = m.attribute("rtcp")
        if value:
            try:
                return int(value.split()[0])
            except ValueError as exc:
                raise SdpError(f"bad a=rtcp: {value}") from exc
        return m.port + 1

    @property
    def on_hold(self) -> bool:
        """Every live stream held: inactive or a null address (nobody sends media)."""
        live = [i for i, m in enumerate(self.media) if m.port and m.relayable]
        return bool(live) and all(
            self.media[i].direction == "inactive" or self.address(i) in HOLD_ADDRESSES for i in live
        )


def _connection_address(line: str) -> str:
    parts = line[2:].split()
    if len(parts) != 3:
        raise SdpError(f"bad connection line: {line}")
    return parts[2].split("/")[0]  # multicast TTL/count suffix


def parse(body: bytes) -> Session:
    """The description in `body`; SdpError if it has no v= line or a broken m-line."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP does not start with v=")
    session = Session(head=[], media=[])
    for line in lines:
        if line.startswith("m="):
            session.media.append(_media_line(line))
        elif session.media:
            session.media[-1].lines.append(line)
        else:
            session.head.append(line)
    return session


def _media_line(line: str) -> MediaLine:
    parts = line[2:].split(" ", 3)
    if len(parts) < 3:
        raise SdpError(f"bad m-line: {line}")
    port = parts[1].split("/")[0]  # `49170/2`: a port count, kept out of the relay's way
    if not port.isdigit() or int(port) > 65535:
        raise SdpError(f"bad m-line port: {line}")
    formats = parts[3] if len(parts) > 3 else ""
    return MediaLine(parts[0], int(port), parts[2], formats, [])


def write(session: Session) -> bytes:
    out = list(session.head)
    for m in session.media:
        out.append(f"m={m.media} {m.port} {m.proto} {m.formats}".rstrip())
        out.extend(m.lines)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class Anchor:
    """Where the relay receives one m-line's media: its RTP port and RTCP port."""

    rtp: int
    rtcp: int


def anchor(session: Session, anchors: list[Anchor | None], address: str) -> Session:
    """`session` pointing at the relay: m-line i at `anchors[i]`, or port 0 when None.

    c= lines become `address`, except a hold address (0.0.0.0) which stays so
    the other side keeps quiet; `a=rtcp:` names our RTCP port; ICE is removed.
    """
    if len(anchors) != len(session.media):
        raise ValueError("one anchor (or None) per m-line")
    media = [_anchored(m, a, address) for m, a in zip(session.media, anchors, strict=True)]
    return Session(head=_without_ice(session.head, address), media=media)


def _anchored(m: MediaLine, where: Anchor | None, address: str) -> MediaLine:
    if where is None:
        return MediaLine(m.media, 0, m.proto, m.formats, _without_ice(m.lines, address))
    lines = []
    for line in _without_ice(m.lines, address):
        if line.startswith("a=rtcp:"):
            line = f"a=rtcp:{where.rtcp}"  # the address (if any) was the phone's, now ours
        lines.append(line)
    return MediaLine(m.media, where.rtp, m.proto, m.formats, lines)


def _without_ice(lines: list[str], address: str) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("a=") and line[2:].split(":", 1)[0] in ICE_ATTRIBUTES:
            continue
        if line.startswith("c=") and _connection_address(line) not in HOLD_ADDRESSES:
            family = "IP6" if ":" in address else "IP4"
            line = f"c=IN {family} {address}"
        out.append(line)
    return out


def sendrecv(body: bytes) -> bytes:
    """`body` with every stream two-way: the offer that takes a held party to someone new."""
    session = _readable(body)
    if session is None:
        return body
    two_way = [f"a={d}" for d in DIRECTIONS]

    def fixed(lines: list[str]) -> list[str]:
        return ["a=sendrecv" if line in two_way else line for line in lines]

    session.head = fixed(session.head)
    for m in session.media:
        m.lines = fixed(m.lines)
    return write(session)


def inactive(body: bytes) -> bytes:
    """`body` answered on hold: every stream inactive, nothing sent to anyone (RFC 3264 §8.4).

    What a call-back's first party gets until the second one answers.
    """
    session = _readable(body)
    if session is None:
        return b""
    directions = [f"a={d}" for d in DIRECTIONS]

    def held(lines: list[str]) -> list[str]:
        out = [line for line in lines if line not in directions]
        return [f"c=IN IP4 {HOLD_ADDRESSES[0]}" if line.startswith("c=") else line for line in out]

    session.head = held(session.head)
    for m in session.media:
        m.lines = [*held(m.lines), "a=inactive"]
    return write(session)


def refused(offer: bytes, address: str) -> bytes:
    """An answer refusing every stream of `offer` (RFC 3264 §6: port 0), or nothing."""
    session = _readable(offer)
    if session is None:
        return b""
    return write(anchor(session, [None] * len(session.media), address))


def _readable(body: bytes) -> Session | None:
    """The session `body` describes; None for no body or one this module cannot read."""
    if not body:
        return None
    try:
        return parse(body)
    except SdpError:
        return None
