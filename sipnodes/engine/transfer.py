"""Call transfer: what a REFER asks for (RFC 3515) and the NOTIFY bodies that report on it.

Blind transfer: `Refer-To: <sip:102@domain>`. Attended transfer: the Refer-To
URI carries `?Replaces=<call-id>;to-tag=..;from-tag=..` (RFC 3891), naming the
transferor's other call (with the target), which the transferred party takes
over. The B2BUA (calls.py) carries out both; this module only reads and writes.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote

from .message import Address, RemoteProtocolError, Request

SIPFRAG = "message/sipfrag;version=2.0"


@dataclasses.dataclass(frozen=True, slots=True)
class Replaces:
    call_id: str
    to_tag: str
    from_tag: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReferTarget:
    number: str
    replaces: Replaces | None = None


def refer_target(req: Request) -> ReferTarget:
    """The number (and, for attended transfer, the dialog) a REFER names; 400 if unreadable."""
    value = req.headers.get("Refer-To")
    if value is None:
        raise RemoteProtocolError("REFER without Refer-To", 400)
    try:
        uri = Address.parse(value).uri
    except ValueError as exc:
        raise RemoteProtocolError(f"bad Refer-To: {exc}", 400) from exc
    if not uri.is_sip or not uri.user:
        raise RemoteProtocolError("Refer-To is not a SIP URI with a number", 400)
    return ReferTarget(unquote(uri.user), _replaces(uri.text.partition("?")[2]))


def _replaces(headers: str) -> Replaces | None:
    for header in headers.split("&"):
        name, _, value = header.partition("=")
        if name.strip().lower() != "replaces":
            continue
        call_id, *params = unquote(value).split(";")
        tags = {}
        for param in params:
            key, _, tag = param.strip().partition("=")
            tags[key.lower()] = tag
        if not call_id or "to-tag" not in tags or "from-tag" not in tags:
            raise RemoteProtocolError("bad Replaces in Refer-To", 400)
        return Replaces(call_id.strip(), tags["to-tag"], tags["from-tag"])
    return None


def sipfrag(code: int, phrase: str) -> bytes:
    """The NOTIFY body: the status line of the transfer's progress (RFC 3515 §2.4.5)."""
    return f"SIP/2.0 {code} {phrase}\r\n".encode()
