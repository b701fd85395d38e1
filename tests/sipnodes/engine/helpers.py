"""Test helpers: configs, and phones that talk to an Engine in memory (no sockets).

`make_engine` is the one place the tests construct an `Engine`; `Pbx` gives an
engine with its network and phones, and scenes build on it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, TypeVar

from sipnodes.engine.config import Config, parse_config
from sipnodes.engine.core import Engine
from sipnodes.engine.digest import digest_parameters, response_digest
from sipnodes.engine.media import Media
from sipnodes.engine.message import Request, Response, parse
from sipnodes.engine.sipmsg import Peer, new_branch, random_token
from sipnodes.engine.timers import ToWall

REALM = "vs12.sipcloud"
Message = TypeVar("Message", Request, Response)
T0 = 1000.0  # where the fake clock starts
SECRET = b"s" * 16  # the nonce secret: fixed, so that a failing run repeats


def ha1(number: str, password: str, algorithm: str = "MD5", realm: str = REALM) -> str:
    h = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    return h(f"{number}:{realm}:{password}".encode()).hexdigest()


def user_entry(number: str, password: str | None = None, level: int = 1, realm: str = REALM):
    password = password or f"pw{number}"
    return {
        "number": number,
        "display_name": f"User {number}",
        "ha1_md5": ha1(number, password, "MD5", realm),
        "ha1_sha256": ha1(number, password, "SHA-256", realm),
        "call_level": level,
    }


BASE: dict[str, Any] = {
    "server_id": 12,
    "name": "acme-main",
    "realm": REALM,
    "max_clients": 5,
    "listen": {
        "address": "127.0.0.1",
        "sip_port": 5060,
        "callback_port": 0,
        "media_ports": [40000, 40019],
    },
    "public_address": "127.0.0.1",
    "redis_url": "redis://127.0.0.1:6379/15",
    "spool_dir": "var/spool/vs12",
    "system": {
        "out_group_prefix": "9",
        "prompt_language": "en",
        "media_relay": False,
        "upnp": False,
    },
    "cdr": {"failed_call_cdr": True, "realtime_display": True},
    "call_limits": {"no_answer_timeout": 60, "max_call_duration": 0},
    "users": [],
    "dial_plan": [],
    "callback": {"app_server_address": "127.0.0.1", "port": 0, "default_caller": "", "secret": ""},
}


def config_dict(users: list[Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The test config; `users`: numbers (password "pw<number>"), or whole user entries."""
    data = copy.deepcopy(BASE)
    numbers = users if users is not None else ["100", "101", "102", "103", "104", "105", "106"]
    data["users"] = [n if isinstance(n, dict) else user_entry(n) for n in numbers]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def make_config(**overrides: Any) -> Config:
    return parse_config(config_dict(**overrides))


def same_clock(now: float) -> float:
    """The wall clock of a test: it reads as the fake monotonic clock does."""
    return now


def make_engine(
    now: float = T0,
    *,
    to_wall: ToWall = same_clock,
    media: Media | None = None,
    **config_overrides: Any,
) -> Engine:
    """An Engine on `make_config(**config_overrides)`, its clock at `now`.

    The only place the tests call `Engine(...)`: a change to its constructor is made here.
    """
    config = make_config(**config_overrides)
    return Engine(config, now, to_wall=to_wall, secret=SECRET, media=media)


class Net:
    """Delivers the engine's outbox to in-memory phones by address."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.phones: dict[tuple[str, int], Phone] = {}
        self.unrouted: list[bytes] = []

    def pump(self) -> None:
        outbox = self.engine.outbox
        while outbox:
            item = outbox.pop(0)
            phone = self.phones.get((item.peer.host, item.peer.port))
            if phone is None:
                self.unrouted.append(item.data)
            else:
                phone.inbox.append(parse(item.data))

    def timer(self, now: float) -> None:
        self.engine.handle_timer(now)
        self.pump()


class Phone:
    """A minimal UA: builds requests, answers digest challenges, keeps an inbox."""

    def __init__(
        self,
        net: Net,
        number: str,
        port: int,
        password: str | None = None,
        transport: str = "UDP",
        host: str = "127.0.0.1",
    ) -> None:
        self.net = net
        self.number = number
        self.password = password or f"pw{number}"
        self.peer = Peer(transport, host, port)
        self.inbox: list[Request | Response] = []
        self.cseq = 0
        net.phones[(host, port)] = self

    # ---- building ------------------------------------------------------------

    @property
    def contact(self) -> str:
        return f"<sip:{self.number}@{self.peer.host}:{self.peer.port}>"

    def request(
        self,
        method: str,
        ruri: str,
        *,
        call_id: str | None = None,
        from_tag: str | None = None,
        to: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        branch: str | None = None,
    ) -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        req = Request(method, ruri)
        h = req.headers
        h.set(
            "Via",
            f"SIP/2.0/{self.peer.transport} {self.peer.host}:{self.peer.port}"
            f";branch={branch or new_branch()};rport",
        )
        h.set("Max-Forwards", "70")
        h.set("From", f"<sip:{self.number}@{REALM}>;tag={from_tag or random_token(4)}")
        h.set("To", to or f"<sip:{self.number}@{REALM}>")
        h.set("Call-ID", call_id or random_token(8))
        h.set("CSeq", f"{cseq} {method}")
        h.set("Contact", self.contact)
        return _complete(req, headers, body)

    def authorize(
        self,
        req: Request,
        challenge: str,
        header: str,
        password: str | None = None,
        username: str | None = None,
    ) -> Request:
        p = digest_parameters(challenge)
        assert p is not None, challenge
        alg = p.get("algorithm", "MD5")
        user = username or self.number
        pw = password or self.password
        h1 = ha1(user, pw, alg, p["realm"])
        params = {"qop": "auth", "nc": "00000001", "cnonce": "abc123"}
        resp = response_digest(alg, h1, p["nonce"], req.method, str(req.uri), params)
        req.headers.set(
            header,
            f'Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
            f'uri="{req.uri}", response="{resp}", algorithm={alg}, qop=auth, '
            f'nc=00000001, cnonce="abc123"',
        )
        return req

    # ---- talking -------------------------------------------------------------

    def send(self, msg: Request | Response, now: float) -> None:
        self.net.engine.receive(bytes(msg), self.peer, now)
        self.net.pump()

    def take(self) -> list[Request | Response]:
        out, self.inbox = self.inbox, []
        return out

    def register(
        self,
        now: float,
        expires: int = 3600,
        password: str | None = None,
        algorithm: str = "MD5",
        contact: str | None = None,
        call_id: str | None = None,
    ) -> Response:
        call_id = call_id or f"reg-{self.number}-{self.peer.port}"
        headers = {"Expires": str(expires)}
        if contact:
            headers["Contact"] = contact
        req = self.request("REGISTER", f"sip:{REALM}", call_id=call_id, headers=headers)
        self.send(req, now)
        first = self.take()[-1]
        assert isinstance(first, Response)
        if first.code != 401:
            return first
        challenge = [
            c for c in first.headers.getlist("WWW-Authenticate") if f"algorithm={algorithm}" in c
        ][0]
        req2 = self.request("REGISTER", f"sip:{REALM}", call_id=call_id, headers=headers)
        self.authorize(req2, challenge, "Authorization", password=password)
        self.send(req2, now)
        final = self.take()[-1]
        assert isinstance(final, Response)
        return final

    def dial(
        self,
        number: str,
        now: float,
        *,
        call_id: str,
        from_tag: str = "atag",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Request:
        """An INVITE to `number`, sent again with credentials after the server's 407.

        Returns the authorized INVITE; what the server answered it is in the inbox.
        """
        ruri, to = f"sip:{number}@{REALM}", f"<sip:{number}@{REALM}>"
        options: dict[str, Any] = {"call_id": call_id, "from_tag": from_tag, "to": to}
        first = self.request("INVITE", ruri, body=body, headers=headers, **options)
        self.send(first, now)
        challenge = self.take()[-1]
        assert isinstance(challenge, Response) and challenge.code == 407
        ack = self.request(
            "ACK",
            ruri,
            call_id=call_id,
            from_tag=from_tag,
            to=challenge.headers["To"],
            cseq=first.cseq.sequence,
            branch=first.via[0].parameters["branch"],
        )
        self.send(ack, now)
        invite = self.request("INVITE", ruri, body=body, headers=headers, **options)
        self.authorize(
            invite, challenge.headers.getlist("Proxy-Authenticate")[0], "Proxy-Authorization"
        )
        self.send(invite, now)
        return invite

    def ack(self, ok: Response, invite: Request, now: float) -> None:
        """The ACK of a 2xx to `invite` (a request of its own, to the 2xx's Contact)."""
        ack = self.request(
            "ACK",
            str(ok.contact[0].uri),
            call_id=invite.call_id,
            from_tag=invite.from_address.tag,
            to=ok.headers["To"],
            cseq=invite.cseq.sequence,
        )
        self.send(ack, now)

    def respond(
        self,
        req: Request,
        code: int,
        to_tag: str | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Response:
        resp = Response(code, "Whatever")
        h = resp.headers
        h.setlist("Via", req.headers.getlist("Via"))
        h.set("From", req.headers["From"])
        to = req.headers["To"]
        if to_tag and "tag=" not in to:
            to += f";tag={to_tag}"
        h.set("To", to)
        h.set("Call-ID", req.headers["Call-ID"])
        h.set("CSeq", req.headers["CSeq"])
        if 100 < code < 300:
            h.set("Contact", self.contact)
        return _complete(resp, headers, body)


class Pbx:
    """An engine, the in-memory network its messages travel on, and phones on that network.

    A scene of a test module subclasses it to add its own phones and steps.
    """

    def __init__(
        self,
        now: float = T0,
        *,
        to_wall: ToWall = same_clock,
        media: Media | None = None,
        **config_overrides: Any,
    ) -> None:
        self.now = now
        self.engine = make_engine(now, to_wall=to_wall, media=media, **config_overrides)
        self.net = Net(self.engine)

    def phone(self, number: str, port: int, **options: Any) -> Phone:
        """A phone on this network, not registered (for tests of registration itself)."""
        return Phone(self.net, number, port, **options)

    def registered(self, number: str, port: int, **options: Any) -> Phone:
        """A phone registered at `self.now`; the test fails if the registrar refuses it."""
        phone = self.phone(number, port, **options)
        ok = phone.register(self.now)
        assert ok.code == 200, f"{number} was refused: {ok.code} {ok.phrase}"
        return phone

    def events(self, type_: str) -> list[dict[str, Any]]:
        """The payloads of the engine's events of one type, oldest first."""
        return [dataclasses.asdict(e.data) for e in self.engine.events if e.type == type_]


def _complete(msg: Message, headers: dict[str, str] | None, body: bytes) -> Message:
    """A phone's extra headers and SDP body, added last to whatever it builds."""
    for k, v in (headers or {}).items():
        msg.headers.set(k, v)
    if body:
        msg.headers.set("Content-Type", "application/sdp")
        msg.body = body
    return msg
