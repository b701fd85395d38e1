"""Registering with upstream SIP servers (trunks), as a UAC: REGISTER, refresh, back off.

Each trunk with a registration keeps one `Registration`: a REGISTER with the
trunk's account, answered challenges (401/407, once per attempt), a refresh
before the granted expiry runs out, and on failure (a final error, or no
answer at all) a retry that waits longer each time, up to `MAX_BACKOFF`, so
a wrong password or a dead upstream is never hammered. Every change of state
is a `TrunkData` event: the portal shows it on the server page.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable

from .config import Trunk
from .digest import Credentials, authorization
from .events import EventData, TrunkData
from .message import Response, Via
from .sipmsg import Peer, make_request, new_branch, random_token
from .timers import Scheduler, Timer, ToWall
from .transaction import ClientTransaction, TransactionLayer

FIRST_BACKOFF = 30.0
MAX_BACKOFF = 900.0
REFRESH_SHARE = 0.8  # refresh when this share of the granted expiry has passed
MIN_REFRESH = 30.0


class TrunkState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERED = "registered"
    FAILING = "failing"


@dataclasses.dataclass(eq=False)
class Registration:
    """One trunk's registration: where it stands, and its next attempt."""

    trunk: Trunk
    call_id: str
    tag: str
    cseq: int = 0
    state: TrunkState = TrunkState.UNREGISTERED
    reason: str = ""
    failures: int = 0
    challenged: bool = False  # this attempt already answered a challenge
    timer: Timer | None = None
    attempt: float = 0.0  # wall time of the last REGISTER sent

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TrunkRegistrar:
    """Every registering trunk of the server; `configure` follows the config's trunks."""

    def __init__(
        self,
        layer: TransactionLayer,
        scheduler: Scheduler,
        emit: Callable[[EventData, float], None],
        to_wall: ToWall,
    ) -> None:
        self.layer = layer
        self.scheduler = scheduler
        self.emit = emit
        self.to_wall = to_wall
        self.host, self.port = "", 0  # ours, as the upstream reaches us
        self.registrations: dict[int, Registration] = {}
        self.leaving: dict[int, Registration] = {}  # unregistering (Expires: 0)

    def configure(self, trunks: Iterable[Trunk], host: str, port: int, now: float) -> None:
        """Start new registrations, restart changed ones, end those no longer configured."""
        self.host, self.port = host, port
        wanted = {t.id: t for t in trunks if t.registration is not None}
        for trunk_id, reg in list(self.registrations.items()):
            if wanted.get(trunk_id) != reg.trunk:
                self._end(reg, now)
        for trunk_id, trunk in wanted.items():
            if trunk_id not in self.registrations:
                reg = Registration(trunk, random_token(12), random_token(6))
                self.registrations[trunk_id] = reg
                self._register(now, reg)

    def stop(self, now: float) -> None:
        """The worker is stopping: unregister everywhere (Expires: 0), best effort."""
        for reg in list(self.registrations.values()):
            self._end(reg, now)

    # ---- sending -------------------------------------------------------------

    def _register(self, now: float, reg: Registration) -> None:
        """One attempt: a REGISTER for the trunk's full expiry."""
        reg.timer = None
        self._send(reg, now, self._expires(reg))

    def _send(self, reg: Registration, now: float, expires: int, auth: str = "") -> None:
        """A REGISTER for `expires` seconds (0: unregister), answering a challenge with `auth`."""
        trunk, account = reg.trunk, reg.trunk.registration
        assert account is not None
        domain = account.realm or trunk.address
        aor = f"<sip:{account.user}@{domain}>"
        peer = Peer(trunk.transport, trunk.address, trunk.port)
        reg.cseq += 1
        request = make_request(
            "REGISTER",
            f"sip:{trunk.address}:{trunk.port}",
            via=Via(trunk.transport, self.host, self.port, {"branch": new_branch(), "rport": None}),
            from_=f"{aor};tag={reg.tag}",
            to=aor,
            call_id=reg.call_id,
            cseq=reg.cseq,
            contact=f"<sip:{account.user}@{self.host}:{self.port}>",
        )
        request.headers.set("Expires", str(expires))
        if auth:
            request.headers.set(*auth.split(": ", 1))
        tx = self.layer.send_request(request, peer, now)
        tx.owner = reg
        reg.attempt = self.to_wall(now)

    def _end(self, reg: Registration, now: float) -> None:
        reg.cancel_timer()
        self.registrations.pop(reg.trunk.id, None)
        if reg.state is TrunkState.REGISTERED:
            reg.challenged = False
            self.leaving[reg.trunk.id] = reg
            self._send(reg, now, 0)
        self._report(reg, TrunkState.UNREGISTERED, "", now, None)

    # ---- answers ---------------------------------------------------------------

    def on_response(self, tx: ClientTransaction, resp: Response, now: float) -> None:
        reg = tx.owner
        if not isinstance(reg, Registration) or resp.code < 200:
            return
        leaving = self.leaving.get(reg.trunk.id) is reg
        if self.registrations.get(reg.trunk.id) is not reg and not leaving:
            return  # an answer to a registration since ended
        if resp.code in (401, 407) and not reg.challenged:
            header = "WWW-Authenticate" if resp.code == 401 else "Proxy-Authenticate"
            answer = self._answer(reg, tx, resp.headers.getlist(header))
            if answer:
                reg.challenged = True
                name = "Authorization" if resp.code == 401 else "Proxy-Authorization"
                expires = 0 if leaving else self._expires(reg)
                self._send(reg, now, expires, f"{name}: {answer}")
                return
        reg.challenged = False
        if leaving:
            del self.leaving[reg.trunk.id]
            return
        if 200 <= resp.code < 300:
            reg.failures = 0
            granted = _granted(resp, self._expires(reg))
            self._report(reg, TrunkState.REGISTERED, "", now, None)
            refresh = max(MIN_REFRESH, granted * REFRESH_SHARE)
            self._retry(reg, now, refresh)
        else:
            why = f"{resp.code} {resp.phrase}"
            if resp.code in (401, 407):
                why += " - the upstream refused the trunk's credentials"
            self._failed(reg, why, now)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        reg = tx.owner
        if not isinstance(reg, Registration):
            return
        if self.leaving.get(reg.trunk.id) is reg:
            del self.leaving[reg.trunk.id]
        elif self.registrations.get(reg.trunk.id) is reg:
            reg.challenged = False
            self._failed(reg, "no answer from the upstream", now)

    def _answer(self, reg: Registration, tx: ClientTransaction, challenges: list[str]) -> str:
        account = reg.trunk.registration
        assert account is not None
        creds = Credentials(account.auth_user or account.user, account.password, account.realm)
        for challenge in challenges:
            answer = authorization(challenge, "REGISTER", str(tx.request.uri), creds)
            if answer:
                return answer
        return ""

    def _failed(self, reg: Registration, why: str, now: float) -> None:
        reg.failures += 1
        wait = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (reg.failures - 1))
        self._report(reg, TrunkState.FAILING, why, now, self.to_wall(now + wait))
        self._retry(reg, now, wait)

    def _retry(self, reg: Registration, now: float, after: float) -> None:
        reg.cancel_timer()
        reg.timer = self.scheduler.call_at(now + after, self._register, reg)

    def _report(
        self, reg: Registration, state: TrunkState, why: str, now: float, next_at: float | None
    ) -> None:
        changed = (state, why) != (reg.state, reg.reason)
        reg.state, reg.reason = state, why
        if changed or state is TrunkState.FAILING:
            data = TrunkData(reg.trunk.id, state.value, why, reg.attempt, next_at)
            self.emit(data, now)

    @staticmethod
    def _expires(reg: Registration) -> int:
        account = reg.trunk.registration
        assert account is not None
        return account.expires


def _granted(resp: Response, asked: int) -> int:
    """The expiry the upstream granted: Contact's expires, else Expires, else what we asked."""
    value = resp.headers.get("Expires")
    for contact in resp.headers.getlist("Contact"):
        _, found, rest = contact.partition("expires=")
        if found:
            value = rest.split(";")[0].split(",")[0].strip()
            break
    try:
        return int(value) if value is not None else asked
    except ValueError:
        return asked
