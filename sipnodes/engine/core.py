"""The whole virtual server without IO: bytes and time in, datagrams and events out.

`Engine.receive(data, peer, now)`, `Engine.receive_callback(data, source, now)`
(the call-back port) and `Engine.handle_timer(now)` are the only inputs besides
`reload`/`stop`; after each, the shell drains `outbox` (messages to send),
`callback_outbox` (call-back datagrams), `events` (for the stream) and
`location.ops` (Redis write-through), then re-arms its one timer on `get_timer()`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from .callback import Address, CallbackOutcome, CallbackService, CallbackSettings, Datagram
from .calls import B2BUA, CallSettings
from .config import Config
from .dialplan import DialPlan
from .digest import Authenticator
from .events import Event, EventData, StatusData, make_event
from .guard import Guard
from .location import LocationTable
from .media import Media, MediaSettings, PassThrough
from .message import RemoteProtocolError, Request, Response, parse
from .registrar import Registrar, RegistrationChange
from .sipmsg import (
    Peer,
    Send,
    make_response,
    random_token,
    refusal_response,
    shed_response,
    stamp_via,
)
from .timers import Scheduler, ToWall
from .transaction import ClientTransaction, ServerTransaction, TransactionLayer
from .trunks import Registration, TrunkRegistrar

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER, NOTIFY"
SWEEP_INTERVAL = 1.0
GUARD_SWEEP = 60.0  # seconds between clean-ups of the password-guessing counters
# Option tags a request may Require (100rel is a later issue); replaces: RFC 3891 transfer.
SUPPORTED: frozenset[str] = frozenset({"replaces"})
RETRY_AFTER = 5
# A refresh REGISTER that changes nothing is an event at most this often (seconds): the
# server's registration activity, which the zombie purge reads (`last_registration_at`).
ACTIVITY_INTERVAL = 3600.0
# Methods we know but only relay inside a call's dialog.
_IN_DIALOG_ONLY = {"BYE", "INFO", "UPDATE", "NOTIFY", "MESSAGE", "REFER", "PRACK", "SUBSCRIBE"}


class Engine:
    """Wires the cores together and routes each request to the one that owns it."""

    def __init__(
        self,
        config: Config,
        now: float,
        *,
        to_wall: ToWall,
        secret: bytes | None = None,
        media: Media | None = None,
    ) -> None:
        """`now` is monotonic (timers); `to_wall` turns it into UTC epoch seconds (events)."""
        self.secret = secret or os.urandom(16)
        self.to_wall = to_wall
        self.outbox: list[Send] = []
        self.events: list[Event] = []
        self._registration_reported = -math.inf  # when the last `register` event went out
        self.scheduler = Scheduler()
        self.location = LocationTable(to_wall)
        self.layer = TransactionLayer(self.scheduler, self.outbox)
        self.stopping = False
        # The share of new requests served (1.0: all). The shell lowers it while its
        # socket backlog grows and raises it as the backlog drains; the rest get a
        # stateless 503 (or 481) that costs almost nothing, so the worker keeps its
        # time for the work it admitted and goodput stays near the peak.
        self.admit = 1.0
        self._admit_credit = 0.0
        self.shed = 0
        self.guard = Guard(to_wall)
        self._guard_swept = now
        self._apply(config)
        self.b2bua = B2BUA(
            layer=self.layer,
            scheduler=self.scheduler,
            location=self.location,
            media=media or PassThrough(),
            emit=self.emit,
            to_wall=to_wall,
            settings=CallSettings.from_config(config),
            auth=self.auth,
            dialplan=self.dialplan,
        )
        self.trunks = TrunkRegistrar(self.layer, self.scheduler, self.emit, to_wall)
        self.layer.tu = self
        self.callback_outbox: list[Datagram] = []
        self.callbacks = CallbackService(CallbackSettings.from_config(config), self.b2bua, now)
        self.b2bua.on_callback_ended = self._callback_ended
        self.scheduler.call_at(now + SWEEP_INTERVAL, self._sweep)
        self._configure_trunks(now)

    def _configure_trunks(self, now: float) -> None:
        config = self.config
        self.trunks.configure(config.trunks, config.public_address, config.listen.sip_port, now)

    def _apply(self, config: Config) -> None:
        self.config = config
        self.auth = Authenticator(
            config.realm, config.users_by_number, self.secret, config.auth.algorithms
        )
        self.registrar = Registrar(config, self.auth, self.location)
        local = {*config.users_by_number, *(g.number for g in config.hunt_groups)}
        self.dialplan = DialPlan(
            config.dial_plan, local, config.system.out_group_prefix, config.external_line
        )

    # ---- inputs --------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """One message from the network. Bad input is dropped, never raised."""
        if not data.strip(b"\r\n"):
            return  # keepalive (RFC 5626 CRLF ping over UDP)
        if self.guard.blocked(peer.host, now):
            return  # guessing passwords: dropped unanswered until the block ends
        if self.admit < 1.0:
            shed = shed_response(data, RETRY_AFTER)
            if shed is not None and not (shed.new_work and self._admitted()):
                if shed.response:
                    self.outbox.append(Send(shed.response, peer))
                self.shed += 1
                return
        try:
            message = parse(data)
        except RemoteProtocolError as exc:
            log.debug("refused message from %s:%s: %s", peer.host, peer.port, exc)
            refusal = refusal_response(data, exc.status, str(exc))
            if refusal is not None:
                self.outbox.append(Send(refusal, peer))
            return
        try:
            if isinstance(message, Response):
                if not self.layer.receive_response(message, now):
                    log.debug("stray response %s from %s", message.code, peer.host)
            else:
                self._request(message, peer, now)
        except (ValueError, KeyError, IndexError) as exc:
            log.debug("unusable message from %s:%s: %s", peer.host, peer.port, exc)

    def receive_callback(self, data: bytes, source: Address, now: float) -> None:
        """One datagram from the call-back port; its ACK goes to `callback_outbox`."""
        mark = len(self.callback_outbox)
        replies = self.callbacks.receive(data, source, now, self.to_wall(now))
        # Before any RESPONSE the dialer produced meanwhile (a call-back ended at once).
        self.callback_outbox[mark:mark] = replies

    def _callback_ended(self, outcome: CallbackOutcome) -> None:
        self.callback_outbox.extend(self.callbacks.ended(outcome))

    def _admitted(self) -> bool:
        """Admit new requests evenly at the rate `admit` (not in bursts)."""
        self._admit_credit += self.admit
        if self._admit_credit < 1.0:
            return False
        self._admit_credit -= 1.0
        return True

    def _request(self, req: Request, peer: Peer, now: float) -> None:
        stamp_via(req, peer)
        tx, new = self.layer.receive_request(req, peer, now)
        if req.method == "ACK":
            if new:
                self.b2bua.on_ack(req, now)
            return
        if tx is None:
            return
        self.auth.take_last()  # what an earlier request left there is not this one's
        try:
            self._dispatch(req, tx, peer, now)
        except (RemoteProtocolError, ValueError, KeyError, IndexError) as exc:
            status = exc.status if isinstance(exc, RemoteProtocolError) else 400
            log.debug("refused %s from %s: %s", req.method, peer.host, exc)
            if not tx.final_sent:
                tx.respond(make_response(req, status, f"Bad Request - {exc}"[:60]), now)
        answered = self.auth.take_last()
        if answered is not None:  # the request answered a challenge: right or wrong
            self.guard.observe(peer.host, answered, now)

    def _dispatch(self, req: Request, tx: ServerTransaction, peer: Peer, now: float) -> None:
        method = req.method
        if not req.uri.is_sip:  # RFC 3261 §8.2.2.1
            tx.respond(make_response(req, 416, to_tag=random_token(4)), now)
            return
        unsupported = [opt for opt in req.require if opt.lower() not in SUPPORTED]
        if unsupported and method not in ("CANCEL", "BYE"):  # RFC 3261 §8.2.2.3
            response = make_response(req, 420, to_tag=random_token(4))
            response.headers.set("Unsupported", ", ".join(unsupported))
            tx.respond(response, now)
        elif self.stopping and method in ("INVITE", "REGISTER") and not req.to_address.tag:
            tx.respond(make_response(req, 503, "Service Unavailable - stopping"), now)
        elif method == "OPTIONS":
            response = make_response(req, 200, to_tag=random_token(4))
            response.headers.set("Allow", ALLOW)
            response.headers.set("Accept", "application/sdp")
            tx.respond(response, now)
        elif method == "REGISTER":
            response, changes = self.registrar.handle(req, peer, now)
            tx.respond(response, now)
            self._emit_registrations(changes, now)
        elif method == "INVITE":
            if req.to_address.tag:
                self.b2bua.on_in_dialog(req, tx, now)
            else:
                self.b2bua.on_invite(req, tx, peer, now)
        elif method == "CANCEL":
            self.b2bua.on_cancel(req, tx, now)
        elif method in _IN_DIALOG_ONLY:
            if req.to_address.tag:
                self.b2bua.on_in_dialog(req, tx, now)
            else:
                status = 481 if method == "BYE" else 405
                response = make_response(req, status)
                response.headers.set("Allow", ALLOW)
                tx.respond(response, now)
        else:
            response = make_response(req, 501)
            response.headers.set("Allow", ALLOW)
            tx.respond(response, now)

    def handle_timer(self, now: float) -> None:
        self.scheduler.run_due(now)

    def get_timer(self) -> float | None:
        return self.scheduler.next_deadline()

    # ---- life cycle ----------------------------------------------------------

    def _sweep(self, now: float) -> None:
        self._emit_registrations(self.registrar.expire(now), now)
        self.b2bua.check_media(now)
        if now >= self._guard_swept + GUARD_SWEEP:
            self.guard.sweep(now)
            self._guard_swept = now
        self.scheduler.call_at(now + SWEEP_INTERVAL, self._sweep)

    def restore(self, records: dict[Any, Any], now: float) -> int:
        """Bindings read back from Redis at start; users no longer configured are dropped."""
        restored = self.location.restore(records, now)
        for b in restored:
            if b.user not in self.config.users_by_number:
                self.location.remove(b.user, b.contact)
        return self.location.registered_clients()

    def reload(self, config: Config, now: float) -> None:
        """New config (SIGHUP): keep calls and registrations, drop removed users."""
        self._apply(config)
        self.b2bua.configure(CallSettings.from_config(config), self.auth, self.dialplan)
        self.b2bua.media.configure(MediaSettings.from_config(config))
        self.callbacks.configure(CallbackSettings.from_config(config))
        self._configure_trunks(now)
        for b in self.location.all():
            if b.user not in config.users_by_number:
                self.location.remove(b.user, b.contact)
                self.b2bua.drop_user(b.user, now)
                count = self.location.registered_clients()
                self._emit_registrations(
                    [RegistrationChange("unregister", b.user, b.contact, 0, count)], now
                )
        self.status("reloaded", now)

    def stop(self, now: float) -> None:
        """SIGTERM: end every call (BYE), refuse new ones; the shell then drains."""
        self.stopping = True
        self.callbacks.stopping = True
        self.b2bua.stop_all(now)
        self.trunks.stop(now)

    # ---- the transaction user: a client transaction's answer goes to who sent it ----

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if isinstance(tx.owner, Registration):
            self.trunks.on_response(tx, response, now)
        else:
            self.b2bua.on_response(tx, response, now)

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        if isinstance(tx.owner, Registration) and isinstance(tx, ClientTransaction):
            self.trunks.on_timeout(tx, now)
        else:
            self.b2bua.on_timeout(tx, now)

    # ---- events --------------------------------------------------------------

    def emit(self, data: EventData, now: float) -> None:
        self.events.append(make_event(data, self.config.server_id, self.to_wall(now)))

    def _emit_registrations(self, changes: list[RegistrationChange], now: float) -> None:
        """One event per change; a refresh only when no `register` went out for an hour."""
        for change in changes:
            if change.refresh and now < self._registration_reported + ACTIVITY_INTERVAL:
                continue
            if change.action == "register":
                self._registration_reported = now
            self.emit(change.data(), now)

    def status(self, state: str, now: float) -> None:
        clients = self.location.registered_clients()
        self.emit(StatusData(state, self.config.name, clients, len(self.b2bua.calls)), now)
