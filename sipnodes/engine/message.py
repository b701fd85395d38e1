"""SIP messages (RFC 3261 §7, §20, §25): a lean parser and writer for the hot path.

Parsing splits the header block once and files every field under its canonical
lower-case name (compact forms expanded), so a lookup is one dict access.
Nothing inside a field is parsed until somebody asks: Via, From/To, Contact,
CSeq and the Request-URI are parsed on first use and cached. Most messages the
server sees need only the top Via, the tags, CSeq and Call-ID.

Strict where RFC 3261 is strict (the request line, the version, CSeq, a single
Content-Length that the body satisfies, the mandatory headers of §8.1.1) and
liberal where it is liberal (header-name case, compact forms, whitespace
around colons, line folding, unknown headers and URI schemes, extra octets
after the body of a datagram). Errors are `RemoteProtocolError`: the peer's
fault, carrying the status to answer with.

Writing: `bytes(message)` emits canonical header names, in the order the
fields were first set, with a Content-Length computed from the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import NamedTuple

MAX_MESSAGE_SIZE = 65535
MAX_CSEQ = 2**31 - 1  # §8.1.1.5: a 32-bit unsigned integer, less than 2**31

# §7.3.3 compact forms.
COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "b": "referred-by",
    "x": "session-expires",
}
# Names whose canonical spelling is not plain Title-Case.
_SPELLING = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}
# Headers that hold one value, never a comma-separated list (§7.3.1).
_SINGLE = ("call-id", "cseq", "max-forwards", "content-length", "from", "to")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+\Z")
_VERSION = "SIP/2.0"
# An unquoted display name: tokens separated by whitespace (§25.1 display-name).
_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9.!%*_+`'~\- \t]+\Z")
# §20.42, with the LWS §7.3.1 allows around the slashes: "SIP / 2.0 / UDP host;...".
_VIA = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+([^;\s]+)\s*(;.*)?\Z", re.S)


class RemoteProtocolError(ValueError):
    """The peer sent something we cannot use (their fault); `status` is what to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _key_of(name: str) -> str:
    key = name.lower()
    return COMPACT.get(key, key) if len(key) == 1 else key


def _spell(key: str) -> str:
    return _SPELLING.get(key) or "-".join(part.capitalize() for part in key.split("-"))


_KNOWN = (
    *COMPACT.values(),
    *_SPELLING,
    "max-forwards",
    "expires",
    "min-expires",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "require",
    "proxy-require",
    "unsupported",
    "allow",
    "accept",
    "user-agent",
    "server",
    "reason",
    "warning",
    "retry-after",
    "record-route",
    "route",
    "date",
    "timestamp",
    "organization",
    "priority",
    "content-disposition",
    "content-language",
    "accept-encoding",
    "accept-language",
    "subscription-state",
    "info-package",
    "call-info",
    "alert-info",
    "in-reply-to",
    "reply-to",
    "p-asserted-identity",
)
_SPELLINGS = {key: _spell(key) for key in _KNOWN}
# Every spelling a peer commonly sends (and the engine writes), to its key in one lookup.
_KEYS = {
    spelled: key for key in _KNOWN for spelled in (key, _SPELLINGS[key], key.upper(), key.title())
}
_KEYS.update({c: key for c, key in COMPACT.items()})
_KEYS.update({c.upper(): key for c, key in COMPACT.items()})


def header_key(name: str) -> str:
    """The canonical lower-case name a field is filed under (compact forms expanded)."""
    return _KEYS.get(name) or _key_of(name)


def spelling(key: str) -> str:
    """How a field's name is written on the wire."""
    return _SPELLINGS.get(key) or _spell(key)


class Headers:
    """Header fields by canonical name; each name keeps its values in order."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, list[str]] | None = None) -> None:
        self._fields: dict[str, list[str]] = fields if fields is not None else {}

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._fields.get(header_key(name))
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._fields.get(header_key(name), ()))

    def __getitem__(self, name: str) -> str:
        values = self._fields.get(header_key(name))
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._fields

    def set(self, name: str, value: str) -> None:
        self._fields[header_key(name)] = [value]

    def add(self, name: str, value: str) -> None:
        self._fields.setdefault(header_key(name), []).append(value)

    def setlist(self, name: str, values: Iterable[str]) -> None:
        values = list(values)
        if values:
            self._fields[header_key(name)] = values
        else:
            self._fields.pop(header_key(name), None)

    def remove(self, name: str) -> None:
        self._fields.pop(header_key(name), None)

    def subset(self, *names: str) -> Headers:
        """A copy of some of the fields (the ones a response copies from its request)."""
        fields = self._fields
        return Headers({k: list(fields[k]) for k in map(header_key, names) if k in fields})

    def fields(self) -> Iterable[tuple[str, list[str]]]:
        """(canonical key, values) in writing order; the lists are not to be changed."""
        return self._fields.items()

    def keys(self) -> list[str]:
        """The wire names of the fields, in writing order."""
        return [spelling(key) for key in self._fields]

    def items(self) -> Iterator[tuple[str, str]]:
        """(wire name, value) pairs in writing order."""
        for key, values in self._fields.items():
            name = spelling(key)
            for value in values:
                yield name, value


# ---- values inside fields ------------------------------------------------------

Params = Mapping[str, str | None]
_NONE: Params = MappingProxyType({})  # shared by every value without parameters


# One item of a list: quoted strings and <...> may hold the separator.
_ITEM = {
    ",": re.compile(r'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^"<,])*'),
    ";": re.compile(r'(?:"(?:[^"\\]|\\.)*"|<[^>]*>|[^"<;])*'),
}


def split_outside(text: str, sep: str) -> list[str]:
    """Split on `sep` (`,` or `;`) outside quoted strings and <...>."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    item = _ITEM[sep]
    parts, pos, end = [], 0, len(text)
    while True:
        stop = item.match(text, pos).end()  # type: ignore[union-attr]  # matches ""
        parts.append(text[pos:stop])
        if stop >= end:
            return parts
        if text[stop] != sep:
            raise ValueError("unterminated quoted string or <URI>")
        pos = stop + 1


def parse_params(text: str) -> Params:
    """`;name=value;flag` (names lower-cased; quoted values keep their quotes)."""
    params: dict[str, str | None] = {}
    for item in split_outside(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"empty parameter in {text[:40]!r}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: Params) -> str:
    return "".join(f";{k}={v}" if v is not None else f";{k}" for k, v in params.items())


class Uri(NamedTuple):
    """A URI as written (`text`) and, for sip/sips, its parts (§19.1.1).

    Other schemes (tel, http, urn, ...) keep only `scheme` and `text`; the
    server routes sip/sips and answers 416 to the rest.
    """

    text: str
    scheme: str
    user: str | None = None
    host: str = ""
    port: int | None = None
    parameters: Params = _NONE

    @classmethod
    def parse(cls, text: str) -> Uri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not scheme or not scheme[0].isalpha() or not rest:
            raise ValueError(f"bad URI {text[:40]!r}")
        if scheme not in ("sip", "sips"):
            return cls(text, scheme)
        if " " in rest or "\t" in rest or "<" in rest or ">" in rest:
            raise ValueError(f"bad SIP URI {text[:40]!r}")
        userinfo, at, hostpart = rest.rpartition("@")  # a user part may hold ; ? and :
        user = userinfo.partition(":")[0] if at else None
        hostport, _, params = hostpart.partition("?")[0].partition(";")
        host, port = _host_port(hostport)
        return cls(text, scheme, user, host, port, parse_params(params) if params else _NONE)

    def __str__(self) -> str:
        return self.text

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")


def _host_port(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    text = text.strip()
    if text[:1] != "[":
        host, _, port_text = text.partition(":")
    else:
        end = text.find("]")
        if end < 0:
            raise ValueError("bad IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not port_text:
            raise ValueError(f"bad host {text!r}")
    if not host:
        raise ValueError("no host")
    if not port_text:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return host.lower(), int(port_text)


class Address(NamedTuple):
    """A name-addr or addr-spec with its header parameters (From, To, Contact)."""

    name: str
    uri: Uri
    parameters: Params

    @classmethod
    def parse(cls, text: str) -> Address:
        text = text.strip()
        if text.startswith('"'):
            name, rest = _quoted(text)
            rest = rest.lstrip()
            if not rest.startswith("<"):
                raise ValueError("display name without <URI>")
        elif "<" in text:
            name, _, rest = text.partition("<")
            name, rest = name.strip(), "<" + rest
            if name and not _DISPLAY_TOKENS.match(name):
                raise ValueError(f"display name {name[:20]!r} must be quoted")
        else:  # addr-spec: parameters after the URI belong to the header (§20.10)
            uri_text, _, params = text.partition(";")
            if "?" in uri_text:  # §20.10: a URI holding "?" must be in <> (RFC 4475 §3.1.2.13)
                raise ValueError(f"URI with '?' outside <>: {uri_text[:40]!r}")
            return cls("", Uri.parse(uri_text), parse_params(params) if params else _NONE)
        end = rest.find(">")
        if end < 0:
            raise ValueError("unterminated <URI>")
        after = rest[end + 1 :].strip()
        if after and not after.startswith(";"):
            raise ValueError(f"junk after <URI>: {after[:20]!r}")
        inner = rest[1:end]
        if inner != inner.strip():
            raise ValueError("whitespace inside <URI>")
        return cls(name, Uri.parse(inner), parse_params(after[1:]) if after else _NONE)

    @property
    def tag(self) -> str | None:
        return self.parameters.get("tag")


def _quoted(text: str) -> tuple[str, str]:
    """The unescaped content of the quoted string `text` starts with, and what follows."""
    out, i = [], 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), text[i + 1 :]
        out.append(ch)
        i += 1
    raise ValueError("unterminated quoted string")


_UNQUOTABLE = re.compile(r"[\x00-\x1f\x7f]+")  # CR and LF would end the header line


def quoted_string(text: str) -> str:
    """`text` as a quoted string (§25.1): a display name as written in From/To.

    Backslash and double quote become quoted-pairs; control characters (a CR or
    LF would start a new header) become a space; non-ASCII text (Chinese names)
    stays as it is, UTF-8 on the wire.
    """
    text = _UNQUOTABLE.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def parse_addresses(values: list[str]) -> list[Address]:
    """Every address of a list header (Contact: a, b), across its lines."""
    return [Address.parse(part) for value in values for part in split_outside(value, ",")]


class Via(NamedTuple):
    """One Via value (§20.42): transport, sent-by and parameters."""

    transport: str
    host: str
    port: int | None
    parameters: Params

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA.match(text)
        if m is None:
            raise ValueError(f"bad Via {text[:40]!r}")
        host, port = _host_port(m.group(2))
        params = m.group(3)
        return cls(m.group(1).upper(), host, port, parse_params(params[1:]) if params else _NONE)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.parameters)}"

    @property
    def branch(self) -> str:
        return self.parameters.get("branch") or ""


def parse_vias(values: list[str]) -> list[Via]:
    return [Via.parse(part) for value in values for part in split_outside(value, ",")]


class CSeq(NamedTuple):
    sequence: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        number, _, method = text.strip().partition(" ")
        method = method.strip()
        if not number.isdigit() or int(number) > MAX_CSEQ or not _TOKEN.match(method):
            raise ValueError(f"bad CSeq {text[:40]!r}")
        return cls(int(number), method)

    def __str__(self) -> str:
        return f"{self.sequence} {self.method}"


# ---- messages ------------------------------------------------------------------


class Message:
    """Headers and body; typed views of the common fields are parsed on first use."""

    __slots__ = ("headers", "body", "_vias", "_from", "_to", "_cseq", "_contact")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._vias: list[Via] | None = None
        self._from: Address | None = None
        self._to: Address | None = None
        self._cseq: CSeq | None = None
        self._contact: list[Address] | None = None

    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self.start_line()]
        for key, values in self.headers.fields():
            if key != "content-length":
                name = _SPELLINGS.get(key) or _spell(key)
                lines.extend([f"{name}: {value}" for value in values])
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode() + self.body

    @property
    def via(self) -> list[Via]:
        if self._vias is None:
            self._vias = parse_vias(self.headers.getlist("Via"))
        return self._vias

    @property
    def top_via(self) -> Via:
        vias = self.via
        if not vias:
            raise ValueError("no Via")
        return vias[0]

    def set_vias(self, vias: list[Via]) -> None:
        self.headers.setlist("Via", [str(v) for v in vias])
        self._vias = vias

    @property
    def from_address(self) -> Address:
        if self._from is None:
            self._from = Address.parse(self.headers["From"])
        return self._from

    @property
    def to_address(self) -> Address:
        if self._to is None:
            self._to = Address.parse(self.headers["To"])
        return self._to

    @property
    def call_id(self) -> str:
        return self.headers["Call-ID"]

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = CSeq.parse(self.headers["CSeq"])
        return self._cseq

    @property
    def contact(self) -> list[Address]:
        if self._contact is None:
            self._contact = parse_addresses(self.headers.getlist("Contact"))
        return self._contact

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit() or int(value) > 255:
            raise ValueError("bad Max-Forwards")
        return int(value)

    @property
    def require(self) -> list[str]:
        return [opt.strip() for v in self.headers.getlist("Require") for opt in v.split(",") if opt]


class Request(Message):
    __slots__ = ("method", "uri_text", "_uri")

    def __init__(
        self, method: str, uri: Uri | str, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri_text = str(uri)
        self._uri: Uri | None = uri if isinstance(uri, Uri) else None

    @property
    def uri(self) -> Uri:
        if self._uri is None:
            self._uri = Uri.parse(self.uri_text)
        return self._uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {_VERSION}"


class Response(Message):
    __slots__ = ("code", "phrase")

    def __init__(
        self, code: int, phrase: str, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.code = code
        self.phrase = phrase

    def start_line(self) -> str:
        return f"{_VERSION} {self.code} {self.phrase}"


# ---- parsing -------------------------------------------------------------------

_MANDATORY = ("via", "from", "to", "call-id", "cseq")


def parse(data: bytes) -> Request | Response:
    """One message from a datagram or a framed stream; RemoteProtocolError if unusable."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message too large", 513)
    head, sep, body = data.lstrip(b"\r\n").partition(b"\r\n\r\n")
    if not sep:
        raise RemoteProtocolError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("headers are not UTF-8") from exc
    lines = text.split("\r\n")
    start = lines[0]
    fields = _parse_fields(lines)
    for key in _MANDATORY:
        if key not in fields:
            raise RemoteProtocolError(f"missing {spelling(key)}")
    headers = Headers(fields)
    message: Request | Response = (
        _response(start, headers) if start.startswith("SIP/") else _request(start, headers)
    )
    message.body = _body(fields.get("content-length"), body)
    try:
        cseq = message.cseq
        # Parsed now, not on first use: every layer above reads them, and a
        # malformed one must be refused here rather than found half-way.
        message.top_via  # noqa: B018
        message.from_address  # noqa: B018
        message.to_address  # noqa: B018
    except ValueError as exc:
        raise RemoteProtocolError(f"bad header: {exc}") from exc
    if isinstance(message, Request) and cseq.method != message.method:
        raise RemoteProtocolError("CSeq method does not match request method")
    return message


def _parse_fields(lines: list[str]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # §7.3.1 folding: continues the previous field's value
            if last is None:
                raise RemoteProtocolError("continuation line before any header")
            last[-1] = f"{last[-1]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        key = _KEYS.get(name) if colon else None
        if key is None:
            name = name.rstrip(" \t")
            if not colon or not _TOKEN.match(name):
                raise RemoteProtocolError(f"bad header line {line[:40]!r}")
            key = _key_of(name)
        last = fields.get(key)
        if last is None:
            fields[key] = last = []
        last.append(value.strip())
    for key in _SINGLE:
        if len(fields.get(key, ())) > 1:
            raise RemoteProtocolError(f"more than one {spelling(key)}")
    return fields


def _request(start: str, headers: Headers) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise RemoteProtocolError("bad request line")
    method, uri, version = parts
    if version != _VERSION:
        raise RemoteProtocolError(f"version {version[:12]!r} not supported", 505)
    if not _TOKEN.match(method):
        raise RemoteProtocolError("bad method")
    if uri.startswith("<") or ":" not in uri:
        raise RemoteProtocolError("bad Request-URI")
    # §19.1.1: a SIP Request-URI has no headers (RFC 4475 §3.1.2.11); a user part may hold "?".
    if (
        "?" in uri
        and uri.partition(":")[0].lower() in ("sip", "sips")
        and "?" in uri.rpartition("@")[2]
    ):
        raise RemoteProtocolError("headers in the Request-URI")
    return Request(method, uri, headers)


def _response(start: str, headers: Headers) -> Response:
    version, _, rest = start.partition(" ")
    code, _, phrase = rest.partition(" ")
    if version != _VERSION or len(code) != 3 or not code.isdigit() or not 100 <= int(code) < 700:
        raise RemoteProtocolError("bad status line")
    return Response(int(code), phrase, headers)


def _body(content_length: list[str] | None, body: bytes) -> bytes:
    """The body, cut to Content-Length (a datagram may carry trailing octets, §18.3)."""
    if content_length is None:
        return body
    value = content_length[0]
    if not value.isdigit():
        raise RemoteProtocolError("bad Content-Length")
    length = int(value)
    if length > len(body):
        raise RemoteProtocolError("Content-Length larger than body")
    return body[:length]
