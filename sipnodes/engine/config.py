"""One virtual server's runtime config: the JSON document the control plane renders.

The file is read into frozen dataclasses and validated here, once; every error
names the field (``config error: users[2].ha1_md5: expected 32 hex characters``)
because the person who reads it is an operator looking at a rendered file.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROUTE_TYPES = ("local_user", "external_line", "sip_trunk")
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_DIGITS = re.compile(r"^[0-9*#+]*$")
_UID = re.compile(r"[A-Za-z0-9-]{1,64}\Z")  # one segment of a Redis key: no `:`
# The call-back shared secret, as the portal makes or takes it: visible ASCII.
_SECRET = re.compile(r"[!-~]{16,128}\Z")
_CALLER = re.compile(r"(?:\+?[0-9]{1,32})?\Z")  # as a call-back REQUEST's caller1


class ConfigError(ValueError):
    """The config file is wrong (the control plane's fault, not the worker's)."""


@dataclasses.dataclass(frozen=True)
class Listen:
    address: str
    sip_port: int
    callback_port: int = 0
    media_ports: tuple[int, int] = (0, 0)


@dataclasses.dataclass(frozen=True)
class System:
    out_group_prefix: str = "9"
    prompt_language: str = "en"
    media_relay: bool = False
    upnp: bool = False


@dataclasses.dataclass(frozen=True)
class CdrOptions:
    failed_call_cdr: bool = True
    realtime_display: bool = True


@dataclasses.dataclass(frozen=True)
class CallLimits:
    no_answer_timeout: int = 60
    max_call_duration: int = 0  # 0 = unlimited


@dataclasses.dataclass(frozen=True)
class RegistrarOptions:
    """Optional (added by the engine): bounds on registration lifetimes, in seconds."""

    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600


@dataclasses.dataclass(frozen=True)
class AuthOptions:
    """Optional (added by the engine): digest challenges sent, in this order.

    MD5 first by default: many phones (and SIPp) answer only the first challenge
    and fail on SHA-256; SHA-256 capable clients still find theirs (RFC 8760).
    """

    algorithms: tuple[str, ...] = ("MD5", "SHA-256")


@dataclasses.dataclass(frozen=True)
class MediaOptions:
    """Optional (added by the engine): the relay's timers, in seconds.

    `timeout`: media stopped on both sides of an answered call for this long
    ends it (0: never); a call on hold (a=inactive, 0.0.0.0) is exempt.
    `relatch_after`: a latched source quiet this long lets another take over.
    """

    timeout: int = 60
    relatch_after: int = 2


@dataclasses.dataclass(frozen=True)
class Forwarding:
    """Where a user's calls go instead (empty: not forwarded), by why they are not taken."""

    unconditional: str = ""
    busy: str = ""
    no_answer: str = ""
    unreachable: str = ""
    no_answer_seconds: int = 20  # how long the user's devices ring before "no answer"


@dataclasses.dataclass(frozen=True)
class User:
    number: str
    display_name: str
    ha1_md5: str
    ha1_sha256: str
    call_level: int = 0
    dnd: bool = False  # do not disturb: calls are refused (busy) or forwarded on busy
    forwarding: Forwarding = Forwarding()
    pickup_group: int = 0  # users of one group (> 0) may pick up each other's ringing calls
    # When DND or forwarding last changed (epoch seconds): a feature code dialled
    # after the config was rendered wins over the older config.
    settings_changed: float = 0.0


HUNT_MODES = ("simultaneous", "sequential", "round_robin")


@dataclasses.dataclass(frozen=True)
class HuntGroup:
    """A number that rings its members: all at once, in order, or in order from the next one."""

    number: str
    name: str
    mode: str
    members: tuple[str, ...]
    ring_seconds: int = 15  # per member in sequential and round-robin modes
    timeout: int = 60  # the whole group; then the overflow target, else "no answer"
    overflow: str = ""


@dataclasses.dataclass(frozen=True)
class DialRule:
    prefix: str
    route: str = "local_user"
    strip: int = 0
    add: str = ""
    call_level: int = 0
    trunk: int = 0  # route sip_trunk: the trunk's id


@dataclasses.dataclass(frozen=True)
class TrunkRegistration:
    """How the worker registers with the upstream; `password` stays in this process."""

    user: str
    password: str
    auth_user: str = ""  # the digest username, when it is not `user`
    realm: str = ""  # empty: answer whatever realm the upstream names
    expires: int = 3600


@dataclasses.dataclass(frozen=True)
class Trunk:
    """An upstream SIP server: where outbound calls go, and whose inbound calls are trusted."""

    id: int
    name: str
    address: str
    port: int
    transport: str  # "UDP" | "TCP"
    registration: TrunkRegistration | None  # None: IP trust only
    caller_id: str = ""  # presented upstream; empty: the caller's own number
    caller_prefix: str = ""  # put before the caller's own number (a branch's prefix)
    dids: Mapping[str, str] = dataclasses.field(default_factory=dict)  # number -> local user
    default_user: str = ""  # an inbound number not in `dids` rings this user
    # Where its inbound calls may go: "dids" (the map above), "local" (also any local
    # number as dialled: a branch server's trunk to the trunk server), "transit" (the dial
    # plan, other trunks included: the trunk server's trunks to its branches).
    inbound: str = "dids"


TRUNK_INBOUND = ("dids", "local", "transit")


@dataclasses.dataclass(frozen=True)
class Callback:
    """The call-back service (docs/callback.md); it listens on `Listen.callback_port`.

    `app_server_address`: the only source accepted ("" admits any); `secret`: when
    set, REQUEST and CANCEL must be signed with it (HMAC-SHA256).
    """

    app_server_address: str = ""
    port: int = 0
    default_caller: str = ""
    secret: str = ""


@dataclasses.dataclass(frozen=True)
class FeatureCodes:
    """What a user dials for each feature; a server may rename any of them.

    Every code starts with * or #, so it is never a number, and none is the
    start of another, so the first that matches is the one meant. Forwarding:
    `<code>*<number>` sets, `<code>#` clears. Directed pickup:
    `<directed_pickup><number>`.
    """

    forward_unconditional: str = "*90"
    forward_busy: str = "*91"
    forward_no_answer: str = "*92"
    forward_unreachable: str = "*93"
    dnd_on: str = "*78"
    dnd_off: str = "*79"
    group_pickup: str = "*8"
    directed_pickup: str = "**"


FEATURES = tuple(f.name for f in dataclasses.fields(FeatureCodes))
# A feature code: * or # first, so that it is never a number, then digits, * or #.
FEATURE_CODE = r"^[*#][0-9*#]+$"
_FEATURE_CODE = re.compile(FEATURE_CODE)


def feature_code_clashes(codes: Mapping[str, str]) -> dict[str, str]:
    """Each feature whose code another feature's code begins with (or is): that feature.

    A phone dialling the longer code would reach the shorter one first. The portal
    refuses such codes with this rule, the worker a config that has them.
    """
    clashes = {}
    for name, code in codes.items():
        other = next((o for o, c in codes.items() if o != name and c.startswith(code)), None)
        if other is not None:
            clashes[name] = other
    return clashes


@dataclasses.dataclass(frozen=True)
class Config:
    server_id: int  # the database id: events carry it, ingest maps it to the row
    server_uid: str  # never reused: keys the live state in Redis (location, live calls)
    name: str
    realm: str
    max_clients: int
    listen: Listen
    public_address: str
    redis_url: str
    spool_dir: str
    system: System
    cdr: CdrOptions
    call_limits: CallLimits
    users: tuple[User, ...]
    dial_plan: tuple[DialRule, ...]
    callback: Callback
    hunt_groups: tuple[HuntGroup, ...] = ()
    feature_codes: FeatureCodes = FeatureCodes()
    trunks: tuple[Trunk, ...] = ()
    external_line: int = 0  # the trunk the out-group prefix reaches (0: none)
    registrar: RegistrarOptions = RegistrarOptions()
    auth: AuthOptions = AuthOptions()
    media: MediaOptions = MediaOptions()

    @functools.cached_property
    def users_by_number(self) -> dict[str, User]:
        return {u.number: u for u in self.users}


class _Reader:
    """Typed access to one JSON object, naming the field in every error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"config error: {path or 'top level'}: expected an object")
        self.data = data
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"config error: {self._name(key)}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        # bool is a subclass of int: refuse it where a number is expected.
        if isinstance(value, bool) and kind is int:
            raise self.fail(key, "expected an integer")
        if not isinstance(value, kind):
            names = {int: "an integer", str: "a string", bool: "true or false", list: "a list"}
            label = names.get(kind, "another type") if isinstance(kind, type) else "a value"
            raise self.fail(key, f"expected {label}")
        return value

    def port(self, key: str, default: Any = ..., allow_zero: bool = False) -> int:
        value = self.get(key, int, default)
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            raise self.fail(key, f"expected a port number ({low}-65535)")
        return int(value)

    def nonneg(self, key: str, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value < 0:
            raise self.fail(key, "expected a number >= 0")
        return int(value)

    def sub(self, key: str, optional: bool = False) -> _Reader:
        if optional and key not in self.data:
            return _Reader({}, self._name(key))
        return _Reader(self.get(key, dict), self._name(key))


def uid_before_uids(server_id: int) -> str:
    """The uid of a server whose config was rendered before servers had one: its id, marked."""
    return f"id-{server_id}"


def _hex(r: _Reader, key: str, length: int) -> str:
    value = r.get(key, str)
    if len(value) != length or not _HEX.match(value):
        raise r.fail(key, f"expected {length} hex characters")
    return str(value).lower()


def _user(r: _Reader) -> User:
    number = r.get("number", str)
    if not number or not _DIGITS.match(number):
        raise r.fail("number", "expected digits")
    return User(
        number=number,
        display_name=r.get("display_name", str, ""),
        ha1_md5=_hex(r, "ha1_md5", 32),
        ha1_sha256=_hex(r, "ha1_sha256", 64),
        call_level=r.nonneg("call_level", 0),
        dnd=r.get("dnd", bool, False),
        forwarding=_forwarding(r.sub("forwarding", optional=True)),
        pickup_group=r.nonneg("pickup_group", 0),
        settings_changed=float(r.get("settings_changed", (int, float), 0)),
    )


def _number(r: _Reader, key: str, default: str = "") -> str:
    value = r.get(key, str, default)
    if not _DIGITS.match(value):
        raise r.fail(key, "expected digits")
    return str(value)


def _forwarding(r: _Reader) -> Forwarding:
    return Forwarding(
        unconditional=_number(r, "unconditional"),
        busy=_number(r, "busy"),
        no_answer=_number(r, "no_answer"),
        unreachable=_number(r, "unreachable"),
        no_answer_seconds=r.nonneg("no_answer_seconds", 20),
    )


def _hunt_group(r: _Reader) -> HuntGroup:
    number = _number(r, "number")
    if not number:
        raise r.fail("number", "expected digits")
    mode = r.get("mode", str, "simultaneous")
    if mode not in HUNT_MODES:
        raise r.fail("mode", f"expected one of {', '.join(HUNT_MODES)}")
    members = r.get("members", list, [])
    if not all(isinstance(m, str) and m and _DIGITS.match(m) for m in members):
        raise r.fail("members", "expected a list of numbers")
    return HuntGroup(
        number=number,
        name=r.get("name", str, ""),
        mode=mode,
        members=tuple(members),
        ring_seconds=r.nonneg("ring_seconds", 15),
        timeout=r.nonneg("timeout", 60),
        overflow=_number(r, "overflow"),
    )


def _hunt_groups(top: _Reader, users: tuple[User, ...]) -> tuple[HuntGroup, ...]:
    taken = {u.number for u in users}
    groups = []
    for i, item in enumerate(top.get("hunt_groups", list, [])):
        group = _hunt_group(_Reader(item, f"hunt_groups[{i}]"))
        if group.number in taken:
            raise ConfigError(
                f"config error: hunt_groups[{i}].number: {group.number} is already taken"
            )
        taken.add(group.number)
        groups.append(group)
    return tuple(groups)


def _feature_codes(r: _Reader) -> FeatureCodes:
    codes = {name: r.get(name, str, getattr(FeatureCodes, name)) for name in FEATURES}
    for name, code in codes.items():
        if not _FEATURE_CODE.match(code):
            raise r.fail(name, "expected * or # and then digits, * or #")
    for name, other in feature_code_clashes(codes).items():
        raise r.fail(name, f"{codes[name]} is the start of the code of {other}")
    return FeatureCodes(**codes)


def _rule(r: _Reader) -> DialRule:
    prefix = r.get("prefix", str)
    if not _DIGITS.match(prefix):
        raise r.fail("prefix", "expected digits")
    route = r.get("route", str, "local_user")
    if route not in ROUTE_TYPES:
        raise r.fail("route", f"expected one of {', '.join(ROUTE_TYPES)}")
    add = r.get("add", str, "")
    if not _DIGITS.match(add):
        raise r.fail("add", "expected digits")
    trunk = r.get("trunk", (int, type(None)), None) or 0
    if route == "sip_trunk" and not trunk:
        raise r.fail("trunk", "a sip_trunk rule names its trunk")
    return DialRule(
        prefix=prefix,
        route=route,
        strip=r.nonneg("strip", 0),
        add=add,
        call_level=r.nonneg("call_level", 0),
        trunk=trunk,
    )


def _trunk(r: _Reader) -> Trunk:
    transport = r.get("transport", str, "UDP").upper()
    if transport not in ("UDP", "TCP"):
        raise r.fail("transport", "expected UDP or TCP")
    address = r.get("address", str)
    if not address or any(c in address for c in " ;<>@"):
        raise r.fail("address", "expected an IP address or a host name")
    reg = r.get("registration", (dict, type(None)), None)
    dids = r.get("dids", dict, {})
    if not all(_DIGITS.match(k) and isinstance(v, str) and v for k, v in dids.items()):
        raise r.fail("dids", "expected numbers mapped to local user numbers")
    return Trunk(
        id=r.get("id", int),
        name=r.get("name", str, ""),
        address=address,
        port=r.port("port", 5060),
        transport=transport,
        registration=_trunk_registration(r.sub("registration")) if reg else None,
        caller_id=_number(r, "caller_id"),
        caller_prefix=_number(r, "caller_prefix"),
        dids=dict(dids),
        default_user=_number(r, "default_user"),
        inbound=_one_of(r, "inbound", TRUNK_INBOUND),
    )


def _one_of(r: _Reader, key: str, values: tuple[str, ...]) -> str:
    value = r.get(key, str, values[0])
    if value not in values:
        raise r.fail(key, f"expected one of {', '.join(values)}")
    return str(value)


def _trunk_registration(r: _Reader) -> TrunkRegistration:
    user = r.get("user", str)
    if not user:
        raise r.fail("user", "expected the account's user name")
    return TrunkRegistration(
        user=user,
        password=r.get("password", str),
        auth_user=r.get("auth_user", str, ""),
        realm=r.get("realm", str, ""),
        expires=max(60, r.nonneg("expires", 3600)),
    )


def _trunks(top: _Reader, rules: tuple[DialRule, ...]) -> tuple[tuple[Trunk, ...], int]:
    trunks = tuple(
        _trunk(_Reader(item, f"trunks[{i}]")) for i, item in enumerate(top.get("trunks", list, []))
    )
    ids = {t.id for t in trunks}
    for i, rule in enumerate(rules):
        if rule.trunk and rule.trunk not in ids:
            raise ConfigError(f"config error: dial_plan[{i}].trunk: no trunk {rule.trunk}")
    external = top.get("external_line", (int, type(None)), None) or 0
    if external and external not in ids:
        raise ConfigError(f"config error: external_line: no trunk {external}")
    return trunks, external


def parse_config(data: Any) -> Config:
    """Validate a decoded JSON document; raise ConfigError naming the bad field."""
    top = _Reader(data, "")
    max_clients = top.get("max_clients", int)
    if max_clients < 1:
        raise top.fail("max_clients", "expected a number >= 1")
    server_id = top.get("server_id", int)
    if server_id < 0:
        raise top.fail("server_id", "expected a number >= 0")
    server_uid = top.get("server_uid", str, uid_before_uids(server_id))
    if not server_uid or not _UID.match(server_uid):
        raise top.fail("server_uid", "expected a non-empty string of letters, digits and -")
    realm = top.get("realm", str)
    if not realm or '"' in realm:
        raise top.fail("realm", "expected a non-empty string without quotes")
    listen = _listen(top.sub("listen"))
    system = top.sub("system", optional=True)
    cdr = top.sub("cdr", optional=True)
    limits = top.sub("call_limits", optional=True)
    callback = top.sub("callback", optional=True)
    users = _users(top)
    rules = tuple(
        _rule(_Reader(item, f"dial_plan[{i}]"))
        for i, item in enumerate(top.get("dial_plan", list, []))
    )
    trunks, external_line = _trunks(top, rules)
    return Config(
        server_id=server_id,
        server_uid=server_uid,
        name=top.get("name", str, ""),
        realm=realm,
        max_clients=max_clients,
        listen=listen,
        public_address=top.get("public_address", str, "") or listen.address,
        redis_url=top.get("redis_url", str, "redis://127.0.0.1:6379/0"),
        spool_dir=top.get("spool_dir", str, f"var/spool/vs{server_id}"),
        system=_system(system),
        cdr=CdrOptions(
            failed_call_cdr=cdr.get("failed_call_cdr", bool, True),
            realtime_display=cdr.get("realtime_display", bool, True),
        ),
        call_limits=CallLimits(
            no_answer_timeout=limits.nonneg("no_answer_timeout", 60),
            max_call_duration=limits.nonneg("max_call_duration", 0),
        ),
        users=users,
        dial_plan=rules,
        callback=_callback(callback),
        hunt_groups=_hunt_groups(top, users),
        trunks=trunks,
        external_line=external_line,
        feature_codes=_feature_codes(top.sub("feature_codes", optional=True)),
        registrar=_registrar(top.sub("registrar", optional=True)),
        auth=_auth(top.sub("auth", optional=True)),
        media=_media(top.sub("media", optional=True)),
    )


def _system(r: _Reader) -> System:
    return System(
        out_group_prefix=r.get("out_group_prefix", str, "9"),
        prompt_language=r.get("prompt_language", str, "en"),
        media_relay=r.get("media_relay", bool, False),
        upnp=r.get("upnp", bool, False),
    )


def _callback(r: _Reader) -> Callback:
    address = r.get("app_server_address", str, "")
    if address:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise r.fail("app_server_address", "expected an IP address or nothing") from None
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        address = str(mapped or ip)  # the form source addresses are compared in
    secret = r.get("secret", str, "")
    if secret and not _SECRET.match(secret):
        raise r.fail("secret", "expected 16-128 visible ASCII characters")
    default_caller = r.get("default_caller", str, "")
    if not _CALLER.match(default_caller):
        raise r.fail("default_caller", "expected a number (digits, + first at most)")
    return Callback(
        app_server_address=address,
        port=r.port("port", 0, allow_zero=True),
        default_caller=default_caller,
        secret=secret,
    )


def _listen(r: _Reader) -> Listen:
    media = r.get("media_ports", list, [0, 0])
    if len(media) != 2 or not all(isinstance(p, int) and 0 <= p <= 65535 for p in media):
        raise r.fail("media_ports", "expected [first, last] port numbers")
    if media[0] > media[1]:
        raise r.fail("media_ports", "first port is after last port")
    return Listen(
        address=r.get("address", str),
        sip_port=r.port("sip_port", allow_zero=True),
        callback_port=r.port("callback_port", 0, allow_zero=True),
        media_ports=(media[0], media[1]),
    )


def _users(top: _Reader) -> tuple[User, ...]:
    users = []
    seen: set[str] = set()
    for i, item in enumerate(top.get("users", list, [])):
        user = _user(_Reader(item, f"users[{i}]"))
        if user.number in seen:
            raise ConfigError(f"config error: users[{i}].number: duplicate {user.number}")
        seen.add(user.number)
        users.append(user)
    return tuple(users)


def _registrar(r: _Reader) -> RegistrarOptions:
    options = RegistrarOptions(
        min_expires=r.nonneg("min_expires", 60),
        max_expires=r.nonneg("max_expires", 7200),
        default_expires=r.nonneg("default_expires", 3600),
    )
    if options.max_expires < options.min_expires:
        raise r.fail("max_expires", "must be >= min_expires")
    return options


def _auth(r: _Reader) -> AuthOptions:
    algorithms = r.get("algorithms", list, ["MD5", "SHA-256"])
    if not algorithms or any(a not in ("MD5", "SHA-256") for a in algorithms):
        raise r.fail("algorithms", "expected a non-empty list of MD5, SHA-256")
    return AuthOptions(algorithms=tuple(dict.fromkeys(algorithms)))


def _media(r: _Reader) -> MediaOptions:
    relatch = r.nonneg("relatch_after", 2)
    if relatch < 1:
        raise r.fail("relatch_after", "expected a number >= 1")
    return MediaOptions(timeout=r.nonneg("timeout", 60), relatch_after=relatch)


def load_config(path: str | Path) -> Config:
    """Read and validate the config file; ConfigError says what is wrong and where."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config error: {path}: not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from exc
    return parse_config(data)
