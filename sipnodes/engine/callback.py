"""The call-back service (IIF): an application server (AS) asks for two calls to be bridged.

Sans-IO like the rest of the engine: `CallbackService.receive(data, source, now,
wall)` takes one datagram from the call-back port and returns the datagrams to
send (its ACK); `ended(outcome)` turns the end of a call-back into the RESPONSE
for the address its REQUEST came from. The calls themselves belong to the
`Dialer` (the B2BUA). The protocol, every result code and the signature are
described for AS authors in docs/callback.md.

Message: `METHOD: name=value;name=value`, one per UDP datagram, printable
ASCII, values percent-encoded. The parser is strict and bounded: whatever it
refuses gets an ACK that says why, and nothing it refuses reaches the dialer.
"""

from __future__ import annotations

import dataclasses
import heapq
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable
from hashlib import sha256
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

from .config import Config

log = logging.getLogger(__name__)

Address = tuple[str, int]
Datagram = tuple[bytes, Address]

# ---- result codes (docs/callback.md) ---------------------------------------------------------
# In an ACK: what became of the REQUEST or CANCEL it answers.
RESULT_ACCEPTED = 0  # the call-back is being placed (REQUEST) or ended (CANCEL)
RESULT_MALFORMED = 1  # not a message: empty, binary, too large, bad grammar or encoding
RESULT_BAD_FIELD = 2  # a field is missing, duplicated or not valid; the reason names it
RESULT_UNKNOWN_METHOD = 3  # a method other than REQUEST and CANCEL
RESULT_CALLID_IN_USE = 4  # a call-back with this callid is still in progress
RESULT_UNKNOWN_CALLID = 5  # CANCEL of a callid with no call-back in progress
RESULT_BAD_SIGNATURE = 6  # a secret is set and `sig` is missing, misplaced or wrong
RESULT_BAD_TIMESTAMP = 7  # a secret is set and `ts` is missing or outside the window
RESULT_REPLAYED = 8  # a secret is set and this (callid, ts, sig) was seen before
RESULT_RATE_LIMITED = 9  # the AS sends faster than the limit, or too many call-backs run
RESULT_NUMBER_REFUSED = 10  # the dial plan refuses a number (raised by the dialer)
RESULT_STOPPING = 11  # the server is stopping and starts no call-back
# In a RESPONSE: how the call-back ended.
RESPONSE_CONNECTED = 0  # the two were connected, whatever ended the call then
RESPONSE_CALLEE1_FAILED = 20  # callee1 did not answer (busy, no answer, refused, unreachable)
RESPONSE_CALLEE2_FAILED = 21  # callee1 answered, callee2 did not
RESPONSE_CANCELLED = 22  # the AS cancelled it before the two were connected

# ---- limits ----------------------------------------------------------------------------------
MAX_DATAGRAM = 1500  # bytes: one Ethernet MTU; anything longer is refused unread
MAX_FIELDS = 16
MAX_CALLID = 64
MAX_DURATION = 86_400  # seconds: `maxduration` above a day is refused
TS_WINDOW = 30  # seconds between `ts` and the server's clock, either way
# Token buckets (datagrams per second, burst). Checked before a datagram is parsed,
# so a flood costs a dict lookup per datagram. Per source address, and for all
# sources together (a blank AS address admits any source, spoofed ones included).
SOURCE_RATE, SOURCE_BURST = 10.0, 40.0
TOTAL_RATE, TOTAL_BURST = 50.0, 200.0
# Over the limit, a source is told so (ACK result 9) at most once per TOLD_EVERY
# seconds, and all sources together at most TOLD_RATE times per second; the rest
# is dropped silently. See `CallbackService._limited`.
TOLD_EVERY = 1.0
TOLD_RATE = 5.0
MAX_SOURCES = 256  # rate buckets kept; the oldest source is forgotten first
MAX_REPLAY_ENTRIES = 4096  # signed messages remembered for their TS_WINDOW
MAX_ACTIVE = 1000  # call-backs in progress at once

_METHOD = re.compile(r"[A-Z]+\Z")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_RAW_VALUE = re.compile(r"(?:[!-$&-:<-~]|%[0-9A-Fa-f]{2})*\Z")  # visible ASCII but ; and bare %
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CALLID = re.compile(r"[!-~]{1,64}\Z")
_NUMBER = re.compile(r"\+?[0-9]{1,32}\Z")
_SECONDS = re.compile(r"[0-9]{1,12}\Z")
_SIG = re.compile(r"[0-9a-f]{64}\Z")
_SIG_FIELD = b";sig="
ANONYMOUS = "anonymous"


# ---- the contract with the dialer --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CallbackRequest:
    """A REQUEST that passed every check, defaults filled in."""

    callid: str
    callee1: str
    callee2: str
    caller1: str  # shown to callee1: a number or "anonymous"
    caller2: str  # shown to callee2
    maxduration: int  # seconds of talk before the server ends the call; 0: no limit


@dataclasses.dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """How a call-back ended: the RESPONSE's fields."""

    callid: str
    result: int  # RESPONSE_*
    cause: int  # Q.850
    duration: float  # talk seconds
    answer1: float | None  # epoch seconds callee1 answered; None: did not
    answer2: float | None


class CallbackRefused(Exception):
    """Raised by the dialer instead of starting a call-back: the ACK carries these."""

    def __init__(self, result: int, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


class Dialer(Protocol):
    def start_callback(self, request: CallbackRequest, now: float) -> None: ...

    def cancel_callback(self, callid: str, now: float) -> bool: ...


# ---- messages ----------------------------------------------------------------------------------


class MessageError(ValueError):
    """A datagram the service refuses: its ACK's result and reason, and the callid if known."""

    def __init__(self, result: int, reason: str, callid: str = "") -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason
        self.callid = callid


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    method: str
    fields: dict[str, str]  # decoded values, in the order sent
    raw: bytes  # the datagram as received: what a signature covers


def parse(data: bytes) -> Message:
    """One datagram into a `Message`; MessageError (result 1 or 2) says what is wrong."""
    if len(data) > MAX_DATAGRAM:
        raise MessageError(RESULT_MALFORMED, f"message too large (over {MAX_DATAGRAM} bytes)")
    text = data.rstrip(b"\r\n")  # tolerated: `echo` adds a newline
    if not text:
        raise MessageError(RESULT_MALFORMED, "empty message")
    if not all(32 <= byte < 127 for byte in text):
        raise MessageError(RESULT_MALFORMED, "not printable ASCII text")
    method, colon, rest = text.decode("ascii").partition(":")
    if not colon:
        raise MessageError(RESULT_MALFORMED, "no ':' after the method")
    if not _METHOD.match(method):
        raise MessageError(RESULT_MALFORMED, "the method must be upper-case letters")
    pairs = _split(rest[1:] if rest.startswith(" ") else rest)
    return Message(method, _fields(pairs), data)


def _split(text: str) -> list[tuple[str, str]]:
    """`name=value;...` into decoded pairs (grammar only: result 1)."""
    if not text:
        return []
    items = text.split(";")
    if len(items) > MAX_FIELDS:
        raise MessageError(RESULT_MALFORMED, f"too many fields (at most {MAX_FIELDS})")
    pairs = []
    for i, item in enumerate(items, 1):
        name, equals, raw = item.partition("=")
        if not equals:
            raise MessageError(RESULT_MALFORMED, f"field {i}: no '=' after the name")
        if not _NAME.match(name):
            raise MessageError(
                RESULT_MALFORMED, f"field {i}: the name must be lower-case letters, digits or _"
            )
        pairs.append((name, _decode(name, raw)))
    return pairs


def _decode(name: str, raw: str) -> str:
    if not _RAW_VALUE.match(raw):
        raise MessageError(RESULT_MALFORMED, f"{name}: bad character or percent-encoding")
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError(RESULT_MALFORMED, f"{name}: not UTF-8 once decoded") from None
    if _CONTROL.search(value):
        raise MessageError(RESULT_MALFORMED, f"{name}: control characters")
    return value


def _fields(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The pairs as a dict; a name given twice is refused (result 2), echoing the callid."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            callid = next((v for n, v in pairs if n == "callid" and _CALLID.match(v)), "")
            raise MessageError(RESULT_BAD_FIELD, f"duplicate field {name}", callid)
        fields[name] = value
    return fields


def encode(method: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """A message's bytes: values percent-encoded where the grammar needs it."""
    body = ";".join(f"{name}={quote(value, safe='+*#:@!$()')}" for name, value in fields)
    return f"{method}: {body}".encode("ascii")


def signature(secret: bytes, unsigned: bytes) -> str:
    """`sig`: lower-case hex HMAC-SHA256 of the bytes before `;sig=`."""
    return hmac.new(secret, unsigned, sha256).hexdigest()


def encode_signed(method: str, fields: Iterable[tuple[str, str]], secret: bytes) -> bytes:
    """A message with `sig` as its last field (the caller includes `ts`)."""
    unsigned = encode(method, fields)
    return unsigned + _SIG_FIELD + signature(secret, unsigned).encode("ascii")


def ack(callid: str, result: int, reason: str = "") -> bytes:
    fields = [("callid", callid), ("result", str(result))]
    return encode("ACK", fields + [("reason", reason)] if result else fields)


def response(outcome: CallbackOutcome) -> bytes:
    """The RESPONSE: times in epoch seconds with milliseconds, empty when not answered."""
    return encode(
        "RESPONSE",
        [
            ("callid", outcome.callid),
            ("result", str(outcome.result)),
            ("cause", str(outcome.cause)),
            ("duration", f"{outcome.duration:.3f}"),
            ("answer1", _time(outcome.answer1)),
            ("answer2", _time(outcome.answer2)),
        ],
    )


def _time(instant: float | None) -> str:
    return "" if instant is None else f"{instant:.3f}"


# ---- a REQUEST's fields ------------------------------------------------------------------------


def _callid(fields: dict[str, str]) -> str:
    callid = fields.get("callid", "")
    if not callid:
        raise MessageError(RESULT_BAD_FIELD, "callid missing")
    if not _CALLID.match(callid):
        raise MessageError(
            RESULT_BAD_FIELD, f"callid must be 1-{MAX_CALLID} visible ASCII characters"
        )
    return callid


def _number(fields: dict[str, str], name: str, callid: str, default: str = "") -> str:
    value = fields.get(name) or default
    if not value:
        raise MessageError(RESULT_BAD_FIELD, f"{name} missing", callid)
    if not _NUMBER.match(value) and not (name.startswith("caller") and value == ANONYMOUS):
        raise MessageError(RESULT_BAD_FIELD, f"{name} is not a number", callid)
    return value


def _maxduration(fields: dict[str, str], callid: str) -> int:
    value = fields.get("maxduration") or "0"
    if not _SECONDS.match(value) or int(value) > MAX_DURATION:
        raise MessageError(
            RESULT_BAD_FIELD, f"maxduration must be whole seconds, 0-{MAX_DURATION}", callid
        )
    return int(value)


def read_request(fields: dict[str, str], callid: str, default_caller: str) -> CallbackRequest:
    """A REQUEST's fields with the defaults of the spec; an empty optional field is absent."""
    callee1 = _number(fields, "callee1", callid)
    return CallbackRequest(
        callid=callid,
        callee1=callee1,
        callee2=_number(fields, "callee2", callid),
        caller1=_number(fields, "caller1", callid, default_caller or ANONYMOUS),
        caller2=_number(fields, "caller2", callid, callee1),
        maxduration=_maxduration(fields, callid),
    )


# ---- admission: address, rate, signature, replay -------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CallbackSettings:
    app_server_address: str  # "" admits any source address
    default_caller: str  # caller1 when the REQUEST names none ("" -> anonymous)
    secret: bytes  # b"": REQUEST and CANCEL need no signature

    @classmethod
    def from_config(cls, config: Config) -> CallbackSettings:
        return cls(
            app_server_address=config.callback.app_server_address,
            default_caller=config.callback.default_caller,
            secret=config.callback.secret.encode("utf-8"),
        )


def same_address(allowed: str, source: str) -> bool:
    """`source` is the allowed address, also written as IPv4-mapped IPv6 or another way."""
    if source == allowed:
        return True
    try:
        address = ipaddress.ip_address(source.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped) == allowed
    return str(address) == allowed


class TokenBucket:
    """`rate` tokens a second up to `burst`; one per datagram."""

    __slots__ = ("rate", "burst", "tokens", "at", "told_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now
        self.told_at = float("-inf")  # when its source was last told it is rate limited

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ReplayCache:
    """Signed messages seen, each kept until its `ts` leaves the window; bounded."""

    def __init__(self, limit: int = MAX_REPLAY_ENTRIES) -> None:
        self.limit = limit
        self._seen: set[tuple[str, int, str]] = set()
        self._expiry: list[tuple[float, tuple[str, int, str]]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: tuple[str, int, str], wall: float) -> int:
        """RESULT_ACCEPTED when new (and now remembered), else REPLAYED or RATE_LIMITED."""
        while self._expiry and self._expiry[0][0] < wall:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        if key in self._seen:
            return RESULT_REPLAYED
        if len(self._seen) >= self.limit:
            # Only validly signed messages get here: the AS itself is too fast.
            return RESULT_RATE_LIMITED
        self._seen.add(key)
        heapq.heappush(self._expiry, (key[1] + TS_WINDOW, key))
        return RESULT_ACCEPTED


# ---- the service -------------------------------------------------------------------------------


class CallbackService:
    """Admits datagrams from the AS, answers each with an ACK, hands requests to the dialer."""

    def __init__(self, settings: CallbackSettings, dialer: Dialer, now: float = 0.0) -> None:
        self.settings = settings
        self.dialer = dialer
        self.stopping = False
        self.active: dict[str, Address] = {}  # callid -> where its REQUEST came from
        self.replays = ReplayCache()
        self._sources: dict[str, TokenBucket] = {}
        self._total = TokenBucket(TOTAL_RATE, TOTAL_BURST, now)
        self._told = TokenBucket(TOLD_RATE, TOLD_RATE, now)
        self.dropped = 0  # from a source other than the AS address
        self.limited = 0  # over the rate limit

    def configure(self, settings: CallbackSettings) -> None:
        """New settings (reload): call-backs in progress, buckets and replay cache stay."""
        self.settings = settings

    def receive(self, data: bytes, source: Address, now: float, wall: float) -> list[Datagram]:
        """One datagram; `now` is monotonic (rate limit), `wall` epoch seconds (`ts`)."""
        allowed = self.settings.app_server_address
        if allowed and not same_address(allowed, source[0]):
            self.dropped += 1
            return []
        bucket = self._bucket(source[0], now)
        if not bucket.take(now) or not self._total.take(now):
            return self._limited(bucket, data, source, now)
        try:
            message = parse(data)
            if message.method in ("ACK", "RESPONSE"):
                return []  # never answer an answer: two servers would ping-pong
            reply = self._handle(message, source, now, wall)
        except MessageError as exc:
            reply = ack(exc.callid, exc.result, exc.reason)
        return [(reply, source)]

    def ended(self, outcome: CallbackOutcome) -> list[Datagram]:
        """The RESPONSE for a call-back the dialer ended, to the address of its REQUEST."""
        source = self.active.pop(outcome.callid, None)
        if source is None:
            log.warning("call-back %r ended but was not in progress", outcome.callid)
            return []
        return [(response(outcome), source)]

    def _bucket(self, host: str, now: float) -> TokenBucket:
        bucket = self._sources.get(host)
        if bucket is None:
            if len(self._sources) >= MAX_SOURCES:
                del self._sources[next(iter(self._sources))]
            bucket = self._sources[host] = TokenBucket(SOURCE_RATE, SOURCE_BURST, now)
        return bucket

    def _limited(
        self, bucket: TokenBucket, data: bytes, source: Address, now: float
    ) -> list[Datagram]:
        """Over the limit: say so now and then, so the AS knows to slow down rather than
        retry into silence; otherwise drop. Never more than a few replies a second, so
        the port cannot be used to reflect a flood at a spoofed source."""
        self.limited += 1
        if now - bucket.told_at < TOLD_EVERY or not self._told.take(now):
            return []
        bucket.told_at = now
        try:
            callid = parse(data).fields.get("callid", "")
        except MessageError:
            callid = ""
        callid = callid if _CALLID.match(callid) else ""
        return [(ack(callid, RESULT_RATE_LIMITED, "rate limited: slow down"), source)]

    def _handle(self, message: Message, source: Address, now: float, wall: float) -> bytes:
        if message.method not in ("REQUEST", "CANCEL"):
            callid = message.fields.get("callid", "")
            callid = callid if _CALLID.match(callid) else ""
            raise MessageError(RESULT_UNKNOWN_METHOD, f"unknown method {message.method}", callid)
        callid = _callid(message.fields)
        if self.settings.secret:
            self._authenticate(message, callid, wall)
        if message.method == "CANCEL":
            return self._cancel(callid, now)
        return self._start(message, callid, source, now)

    def _authenticate(self, message: Message, callid: str, wall: float) -> None:
        """Signature first (a forged datagram learns nothing else), then `ts`, then replay."""
        fields = message.fields
        sig = fields.get("sig")
        if sig is None:
            raise MessageError(RESULT_BAD_SIGNATURE, "sig missing", callid)
        if list(fields)[-1] != "sig":
            raise MessageError(RESULT_BAD_SIGNATURE, "sig must be the last field", callid)
        if not _SIG.match(sig):
            raise MessageError(RESULT_BAD_SIGNATURE, "sig must be 64 lower-case hex digits", callid)
        unsigned = message.raw[: message.raw.rfind(_SIG_FIELD)]
        if not hmac.compare_digest(signature(self.settings.secret, unsigned), sig):
            raise MessageError(RESULT_BAD_SIGNATURE, "sig does not match", callid)
        ts = fields.get("ts", "")
        if not _SECONDS.match(ts):
            raise MessageError(RESULT_BAD_TIMESTAMP, "ts missing or not Unix seconds", callid)
        if abs(wall - int(ts)) > TS_WINDOW:
            raise MessageError(
                RESULT_BAD_TIMESTAMP,
                f"ts is more than {TS_WINDOW} s away from the server's clock",
                callid,
            )
        result = self.replays.add((callid, int(ts), sig), wall)
        if result == RESULT_REPLAYED:
            raise MessageError(result, "replayed message", callid)
        if result == RESULT_RATE_LIMITED:
            raise MessageError(result, "too many signed messages: slow down", callid)

    def _start(self, message: Message, callid: str, source: Address, now: float) -> bytes:
        request = read_request(message.fields, callid, self.settings.default_caller)
        if self.stopping:
            raise MessageError(RESULT_STOPPING, "the server is stopping", callid)
        if callid in self.active:
            raise MessageError(
                RESULT_CALLID_IN_USE, "a call-back with this callid is in progress", callid
            )
        if len(self.active) >= MAX_ACTIVE:
            raise MessageError(RESULT_RATE_LIMITED, "too many call-backs in progress", callid)
        # Known before the dialer runs: it may end the call-back at once (`ended`).
        self.active[callid] = source
        started = False
        try:
            self.dialer.start_callback(request, now)
            started = True
        except CallbackRefused as exc:
            raise MessageError(exc.result, exc.reason, callid) from None
        finally:
            if not started:
                self.active.pop(callid, None)
        return ack(callid, RESULT_ACCEPTED)

    def _cancel(self, callid: str, now: float) -> bytes:
        if callid not in self.active or not self.dialer.cancel_callback(callid, now):
            self.active.pop(callid, None)  # the dialer no longer knows it
            raise MessageError(RESULT_UNKNOWN_CALLID, "no call-back with this callid", callid)
        return ack(callid, RESULT_ACCEPTED)
