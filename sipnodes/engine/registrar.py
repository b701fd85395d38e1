"""Registrar (RFC 3261 §10.3): authenticated REGISTER, bindings, the edition limit.

NAT: a binding remembers the address the REGISTER came from (after `rport`),
and requests to that device are sent there rather than to the Contact's host,
which behind NAT is a private address (the "contact fix-up").
"""

from __future__ import annotations

import dataclasses
import enum

from .config import Config, User
from .digest import Authenticator, Outcome
from .events import RegistrationData
from .location import Binding, LocationTable
from .message import Request, Response
from .sipmsg import Peer, make_response


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrationChange:
    action: str  # "register" | "unregister" | "expire"
    user: str
    contact: str
    expires: int
    registered_clients: int
    # A REGISTER that renewed a binding, same contact from the same address: nothing the
    # event stream reports changed. The engine reports these at most once an hour
    # (`Engine._emit_registrations`), as the server's registration activity.
    refresh: bool = False

    def data(self) -> RegistrationData:
        """The registration event's payload (`RegistrationData` names the fields)."""
        return RegistrationData(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(RegistrationData)}
        )


class Wildcard(enum.Enum):
    """`Contact: *` with `Expires: 0`: remove every binding of the user (§10.2.2)."""

    ALL = "*"


def limit_phrase(max_clients: int) -> str:
    return f"Forbidden - client limit of {max_clients} reached"


class Registrar:
    def __init__(self, config: Config, auth: Authenticator, location: LocationTable) -> None:
        self.config = config
        self.auth = auth
        self.location = location

    def handle(
        self, request: Request, peer: Peer, now: float
    ) -> tuple[Response, list[RegistrationChange]]:
        """Answer one REGISTER; the changes are for the event stream."""
        if not request.to_address.uri.is_sip:  # §10.3 step 3: the AOR must be sip/sips
            return make_response(request, 400, "Bad Request - address of record is not SIP"), []
        try:  # syntax before the challenge: a malformed Contact is refused (RFC 4475 §3.1.2.13)
            request.contact  # noqa: B018  # parsed once, kept for `_wanted`
        except ValueError:
            if [c.strip() for c in request.headers.getlist("Contact")] != ["*"]:
                return make_response(request, 400, "Bad Request - Contact"), []
        user = self._authenticate(request, now)
        if isinstance(user, Response):
            return user, []
        wanted = self._wanted(request)
        if isinstance(wanted, Response):
            return wanted, []
        if wanted is Wildcard.ALL:
            changes = [
                self._change("unregister", b.contact, 0)
                for b in self.location.remove_user(user.number)
            ]
            return self._ok(request, user.number, now), self._finish(user.number, changes)
        adds = any(expires > 0 for _, expires in wanted)
        if (
            adds
            and not self.location.has_user(user.number)
            and self.location.registered_clients() >= self.config.max_clients
        ):
            return make_response(request, 403, limit_phrase(self.config.max_clients)), []
        changes = self._bind(request, user.number, peer, wanted, now)
        return self._ok(request, user.number, now), self._finish(user.number, changes)

    def _authenticate(self, request: Request, now: float) -> User | Response:
        """The registering user, or the response that refuses or challenges them."""
        result = self.auth.check(request.headers.get("Authorization"), "REGISTER", now)
        if result.outcome in (Outcome.CHALLENGE, Outcome.STALE):
            response = make_response(request, 401)
            for value in self.auth.challenges(now, stale=result.outcome is Outcome.STALE):
                response.headers.add("WWW-Authenticate", value)
            return response
        user = result.user
        if result.outcome is not Outcome.OK or user is None:
            return make_response(request, 403)
        if (request.to_address.uri.user or "") != user.number:
            return make_response(request, 403)  # may only register oneself
        return user

    def _wanted(self, request: Request) -> list[tuple[str, int]] | Wildcard | Response:
        """(contact, expires) pairs asked for, the wildcard, or the response refusing them."""
        opts = self.config.registrar
        header_expires = request.headers.get("Expires")
        try:
            default = int(header_expires) if header_expires is not None else None
        except ValueError:
            return make_response(request, 400, "Bad Request - Expires")
        if default is None:
            default = opts.default_expires
        if [c.strip() for c in request.headers.getlist("Contact")] == ["*"]:
            if default != 0:
                return make_response(request, 400, "Bad Request - wildcard needs Expires: 0")
            return Wildcard.ALL
        try:
            contacts = request.contact
        except ValueError:
            return make_response(request, 400, "Bad Request - Contact")
        wanted: list[tuple[str, int]] = []
        for address in contacts:
            param = address.parameters.get("expires")
            try:
                expires = int(param) if param is not None else default
            except ValueError:
                return make_response(request, 400, "Bad Request - expires")
            if 0 < expires < opts.min_expires:
                response = make_response(request, 423)
                response.headers.set("Min-Expires", str(opts.min_expires))
                return response
            wanted.append((str(address.uri), min(max(expires, 0), opts.max_expires)))
        return wanted

    def _bind(
        self, request: Request, user: str, peer: Peer, wanted: list[tuple[str, int]], now: float
    ) -> list[RegistrationChange]:
        changes: list[RegistrationChange] = []
        for contact, expires in wanted:
            if expires == 0:
                if self.location.remove(user, contact):
                    changes.append(self._change("unregister", contact, 0))
                continue
            old = self.location.get(user, contact)
            refresh = old is not None and old.peer == peer
            self.location.put(
                Binding(
                    user=user,
                    contact=contact,
                    peer=peer,
                    expires_at=now + expires,
                    call_id=request.call_id,
                    cseq=request.cseq.sequence,
                    registered_at=old.registered_at if old and refresh else now,
                    wall_offset=self.location.wall_offset(now),
                )
            )
            changes.append(self._change("register", contact, expires, refresh))
        return changes

    def _change(
        self, action: str, contact: str, expires: int, refresh: bool = False
    ) -> RegistrationChange:
        return RegistrationChange(action, "", contact, expires, 0, refresh)

    def _ok(self, request: Request, user: str, now: float) -> Response:
        response = make_response(request, 200)
        for b in self.location.bindings(user):
            expires = max(int(b.expires_at - now + 0.5), 0)
            response.headers.add("Contact", f"<{b.contact}>;expires={expires}")
        return response

    def _finish(self, user: str, changes: list[RegistrationChange]) -> list[RegistrationChange]:
        """Fill in the user and the client count once all changes are applied."""
        count = self.location.registered_clients()
        return [
            RegistrationChange(c.action, user, c.contact, c.expires, count, c.refresh)
            for c in changes
        ]

    def expire(self, now: float) -> list[RegistrationChange]:
        gone = self.location.expire(now)
        count = self.location.registered_clients()
        return [RegistrationChange("expire", b.user, b.contact, 0, count) for b in gone]
