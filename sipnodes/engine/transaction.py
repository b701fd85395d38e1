"""SIP transaction layer, RFC 3261 §17 (with the RFC 6026 `Accepted` state).

Sans-IO: messages and the current time go in; datagrams go to `outbox`, timers
to the `Scheduler`, and responses/timeouts to the transaction user (TU).
Every state change is declared in `TRANSITIONS`; handlers only look the next
state up there and do the side effects the RFC names for it.

Departure from RFC 3261, commented where it happens: the INVITE server
transaction retransmits its own 2xx (Timer G schedule) until the TU reports
the ACK, instead of the TU core doing it (§13.3.1.4); RFC 6026's Timer L
bounds it. One place for all retransmissions keeps the B2BUA simpler.

A non-INVITE server transaction in Completed over UDP only answers
retransmissions with its final response until Timer J (§17.2.2). At thousands
of REGISTERs a second that is hundreds of thousands of transactions, so the
layer keeps just the response bytes and the address for that state
(`TransactionLayer.retire`), and ends them all on one timer: Timer J is the
same for every one of them.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol

from .message import Request, Response
from .sipmsg import (
    MAGIC_COOKIE,
    Peer,
    Send,
    request_on_invite,
    response_peer,
)
from .timers import Scheduler, Timer

T1 = 0.5  # RTT estimate
T2 = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # maximum duration a message remains in the network
TIMER_B = TIMER_F = TIMER_H = TIMER_J = TIMER_L = TIMER_M = 64 * T1
TIMER_D = 32.0


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Kind(enum.Enum):
    ICT = "INVITE client"  # §17.1.1
    NICT = "non-INVITE client"  # §17.1.2
    IST = "INVITE server"  # §17.2.1
    NIST = "non-INVITE server"  # §17.2.2


_C, _T, _P, _X, _F, _A, _Z = (
    State.CALLING,
    State.TRYING,
    State.PROCEEDING,
    State.COMPLETED,
    State.CONFIRMED,
    State.ACCEPTED,
    State.TERMINATED,
)

# (state, event) -> next state.  A pair not listed is ignored (e.g. a late 1xx).
TRANSITIONS: dict[Kind, dict[tuple[State, str], State]] = {
    Kind.ICT: {
        (_C, "timer_A"): _C,
        (_C, "timer_B"): _Z,
        (_C, "1xx"): _P,
        (_P, "1xx"): _P,
        (_C, "2xx"): _A,
        (_P, "2xx"): _A,
        (_A, "2xx"): _A,
        (_A, "timer_M"): _Z,
        (_C, "3xx-6xx"): _X,
        (_P, "3xx-6xx"): _X,
        (_X, "3xx-6xx"): _X,
        (_X, "timer_D"): _Z,
    },
    Kind.NICT: {
        (_T, "timer_E"): _T,
        (_P, "timer_E"): _P,
        (_T, "timer_F"): _Z,
        (_P, "timer_F"): _Z,
        (_T, "1xx"): _P,
        (_P, "1xx"): _P,
        (_T, "final"): _X,
        (_P, "final"): _X,
        (_X, "timer_K"): _Z,
    },
    Kind.IST: {
        (_P, "request"): _P,
        (_P, "send_1xx"): _P,
        (_P, "send_2xx"): _A,
        (_P, "send_3xx-6xx"): _X,
        (_X, "request"): _X,
        (_X, "timer_G"): _X,
        (_X, "timer_H"): _Z,
        (_X, "ACK"): _F,
        (_F, "timer_I"): _Z,
        (_A, "request"): _A,
        (_A, "timer_G"): _A,
        (_A, "ACK"): _A,  # RFC 6026: stay to absorb INVITE retransmissions
        (_A, "timer_L"): _Z,
    },
    Kind.NIST: {
        (_T, "send_1xx"): _P,
        (_P, "send_1xx"): _P,
        (_T, "send_final"): _X,
        (_P, "send_final"): _X,
        (_P, "request"): _P,
        (_X, "request"): _X,
        (_X, "timer_J"): _Z,
    },
}


_DONE = Request("DONE", "sip:invalid")
_DONE_RESPONSE = Response(200, "OK")  # final_sent stays true


class TransactionUser(Protocol):
    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None: ...

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None: ...


class NoUser:
    """The TU of a layer nobody has claimed yet: responses and timeouts are dropped."""

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        return None

    def on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        return None


class Transaction:
    __slots__ = ("layer", "request", "peer", "branch", "owner", "_timers", "kind", "state")
    kind: Kind
    state: State

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer) -> None:
        self.layer = layer
        self.request = request
        self.peer = peer
        self.branch = request.top_via.branch
        self.owner: object = None  # the TU's handle for this transaction (None: not the TU's)
        self._timers: dict[str, Timer] = {}

    def _fire(self, event: str) -> bool:
        """Apply the transition table; False if the event does not apply in this state."""
        nxt = TRANSITIONS[self.kind].get((self.state, event))
        if nxt is None:
            return False
        self.state = nxt
        if nxt is State.TERMINATED:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self.layer._forget(self)
        return True

    def _start(self, name: str, when: float) -> None:
        old = self._timers.pop(name, None)
        if old:
            old.cancel()
        self._timers[name] = self.layer.scheduler.call_at(when, self._on_timer, name)

    def _stop(self, name: str) -> None:
        old = self._timers.pop(name, None)
        if old:
            old.cancel()

    def _on_timer(self, now: float, name: str) -> None:
        self._timers.pop(name, None)
        self.handle_timer(name, now)

    def handle_timer(self, name: str, now: float) -> None:
        raise NotImplementedError


class ClientTransaction(Transaction):
    """§17.1: sends a request, retransmits it over UDP, hands responses to the TU."""

    __slots__ = ("fallback", "method", "data", "interval", "last_response", "_ack")

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        peer: Peer,
        now: float,
        fallback: Peer | None = None,
    ):
        super().__init__(layer, request, peer)
        self.fallback = fallback
        self.method = request.method
        self.kind = Kind.ICT if self.method == "INVITE" else Kind.NICT
        self.state = State.CALLING if self.kind is Kind.ICT else State.TRYING
        self.data = bytes(request)
        self.interval = T1
        self.last_response: Response | None = None
        self._ack: bytes | None = None
        layer.outbox.append(Send(self.data, peer, fallback))
        if self.kind is Kind.ICT:
            if not peer.reliable:
                self._start("timer_A", now + T1)
            self._start("timer_B", now + TIMER_B)
        else:
            if not peer.reliable:
                self._start("timer_E", now + T1)
            self._start("timer_F", now + TIMER_F)

    def handle_timer(self, name: str, now: float) -> None:
        if not self._fire(name):
            return
        if name == "timer_A":  # §17.1.1.2: double each time
            self.layer.outbox.append(Send(self.data, self.peer, self.fallback))
            self.interval *= 2
            self._start("timer_A", now + self.interval)
        elif name == "timer_E":  # §17.1.2.2: double up to T2; T2 once Proceeding
            self.layer.outbox.append(Send(self.data, self.peer, self.fallback))
            self.interval = T2 if self.state is State.PROCEEDING else min(self.interval * 2, T2)
            self._start("timer_E", now + self.interval)
        elif name in ("timer_B", "timer_F"):
            self.layer.tu.on_timeout(self, now)

    def receive_response(self, response: Response, now: float) -> None:
        code = response.code
        if self.kind is Kind.ICT:
            event = "1xx" if code < 200 else "2xx" if code < 300 else "3xx-6xx"
        else:
            event = "1xx" if code < 200 else "final"
        before = self.state
        if not self._fire(event):
            return
        if self.kind is Kind.ICT:
            if event == "1xx":
                self._stop("timer_A")
                self._stop("timer_B")  # §17.1.1.2: Timer B only runs in Calling
            elif event == "2xx":
                self._stop("timer_A")
                self._stop("timer_B")
                if before is not State.ACCEPTED:
                    self._start("timer_M", now + TIMER_M)
            else:
                # §17.1.1.3: the transaction ACKs a non-2xx final itself.
                if self._ack is None:
                    self._ack = bytes(
                        request_on_invite(self.request, "ACK", response.headers["To"])
                    )
                    self._stop("timer_A")
                    self._stop("timer_B")
                    self._start("timer_D", now + (0 if self.peer.reliable else TIMER_D))
                self.layer.outbox.append(Send(self._ack, self.peer, self.fallback))
                if before is State.COMPLETED:
                    return  # retransmitted final: absorbed
        else:
            if event == "final":
                self._stop("timer_E")
                self._stop("timer_F")
                self._start("timer_K", now + (0 if self.peer.reliable else T4))
        self.last_response = response
        self.layer.tu.on_response(self, response, now)
        if code >= 200:
            # Only matching and absorbing remain (Timers D/K/M): free the messages.
            self.request = _DONE
            self.last_response = None
            self.data = b""


class ServerTransaction(Transaction):
    """§17.2: absorbs request retransmissions and retransmits responses over UDP."""

    __slots__ = ("key", "reply_to", "last_response", "_last_data", "interval", "acked")

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer, now: float):
        super().__init__(layer, request, peer)
        self.kind = Kind.IST if request.method == "INVITE" else Kind.NIST
        self.state = State.PROCEEDING if self.kind is Kind.IST else State.TRYING
        self.key = server_key(request)
        self.reply_to = response_peer(request, peer)
        self.last_response: Response | None = None
        self._last_data: bytes | None = None
        self.interval = T1
        self.acked = False

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.code >= 200

    def respond(self, response: Response, now: float) -> bool:
        """Send a response from the TU; False if the transaction is already past it."""
        code = response.code
        if self.kind is Kind.IST:
            event = "send_1xx" if code < 200 else "send_2xx" if code < 300 else "send_3xx-6xx"
        else:
            event = "send_1xx" if code < 200 else "send_final"
        if not self._fire(event):
            return False
        self.last_response = response
        self._last_data = bytes(response)
        self.layer.outbox.append(Send(self._last_data, self.reply_to))
        reliable = self.peer.reliable
        if self.kind is Kind.IST and code >= 200:
            # 2xx: departure from §17.2.1, see module docstring.
            if not reliable:
                self._start("timer_G", now + T1)
            if code < 300:
                self._start("timer_L", now + TIMER_L)
            else:
                self._start("timer_H", now + TIMER_H)
        elif self.kind is Kind.NIST and code >= 200:
            if reliable:
                self._start("timer_J", now)  # Timer J is zero over a reliable transport
            else:
                self.layer.retire(self, self._last_data, now + TIMER_J)
        if code >= 200:
            # From here on the transaction only resends `_last_data` and matches
            # ACKs, for up to 64*T1: keep the bytes, not the parsed messages
            # (memory at high call rates).
            self.request = _DONE
            self.last_response = _DONE_RESPONSE
        return True

    def receive_retransmission(self, now: float) -> None:
        if self._fire("request") and self._last_data is not None:
            self.layer.outbox.append(Send(self._last_data, self.reply_to))

    def receive_ack(self, now: float) -> None:
        """ACK for our final response (the TU reports 2xx ACKs, the layer non-2xx)."""
        was_accepted = self.state is State.ACCEPTED
        if not self._fire("ACK"):
            return
        self.acked = True
        self._stop("timer_G")
        self._stop("timer_H")
        if not was_accepted:
            self._start("timer_I", now + (0 if self.peer.reliable else T4))

    def handle_timer(self, name: str, now: float) -> None:
        if not self._fire(name):
            return
        if name == "timer_G" and self._last_data is not None:
            self.layer.outbox.append(Send(self._last_data, self.reply_to))
            self.interval = min(self.interval * 2, T2)
            self._start("timer_G", now + self.interval)
        elif name == "timer_L" and not self.acked:
            self.layer.tu.on_timeout(self, now)  # 2xx never ACKed


def server_key(request: Request) -> tuple[str, ...]:
    """§17.2.3 matching; RFC 2543 peers (no magic cookie) are keyed on Call-ID and CSeq."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.parameters.get("branch") or ""
    sent_by = f"{via.host}:{via.port or ''}"
    if branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    tag = request.from_address.tag or ""
    return (request.call_id, tag, str(request.cseq.sequence), sent_by, method)


class TransactionLayer:
    """Holds the live transactions and matches incoming messages to them."""

    def __init__(
        self, scheduler: Scheduler, outbox: list[Send], tu: TransactionUser | None = None
    ) -> None:
        self.scheduler = scheduler
        self.outbox = outbox
        self.tu: TransactionUser = tu or NoUser()
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        # Retired non-INVITE server transactions: key -> (final response, where it went),
        # and when each ends, oldest first.
        self.completed: dict[tuple[str, ...], Send] = {}
        self._timer_j: deque[tuple[float, tuple[str, ...]]] = deque()

    def receive_request(
        self, request: Request, peer: Peer, now: float
    ) -> tuple[ServerTransaction | None, bool]:
        """Returns (transaction, is_new).

        (None, False) means the layer absorbed it (retransmission, ACK of a
        non-2xx); (None, True) is an ACK no transaction knows: a 2xx ACK for the TU.
        """
        key = server_key(request)
        tx = self.server.get(key)
        if request.method == "ACK":
            if tx is not None and tx.kind is Kind.IST and tx.state is State.COMPLETED:
                tx.receive_ack(now)
                return None, False
            return None, True
        if tx is not None:
            tx.receive_retransmission(now)
            return None, False
        done = self.completed.get(key)
        if done is not None:  # §17.2.2: Completed answers a retransmission with the final
            self.outbox.append(done)
            return None, False
        tx = ServerTransaction(self, request, peer, now)
        self.server[key] = tx
        return tx, True

    def find_invite_server(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL refers to (§9.2)."""
        key = server_key(cancel)
        return self.server.get((*key[:-1], "INVITE"))

    def receive_response(self, response: Response, now: float) -> bool:
        key = (response.top_via.branch, response.cseq.method)
        tx = self.client.get(key)
        if tx is None:
            return False
        tx.receive_response(response, now)
        return True

    def send_request(
        self, request: Request, peer: Peer, now: float, fallback: Peer | None = None
    ) -> ClientTransaction:
        tx = ClientTransaction(self, request, peer, now, fallback)
        self.client[(tx.branch, tx.method)] = tx
        return tx

    def retire(self, tx: ServerTransaction, final: bytes, until: float) -> None:
        """Keep a non-INVITE server transaction in Completed as bytes until Timer J."""
        self.server.pop(tx.key, None)
        self.completed[tx.key] = Send(final, tx.reply_to)
        if not self._timer_j:
            self.scheduler.call_at(until, self._end_completed)
        self._timer_j.append((until, tx.key))

    def _end_completed(self, now: float) -> None:
        """Timer J of every retired transaction due by `now` (Completed -> Terminated)."""
        due = self._timer_j
        while due and due[0][0] <= now:
            self.completed.pop(due.popleft()[1], None)
        if due:
            self.scheduler.call_at(due[0][0], self._end_completed)

    def _forget(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            self.client.pop((tx.branch, tx.method), None)
        elif isinstance(tx, ServerTransaction):
            self.server.pop(tx.key, None)

    def __len__(self) -> int:
        return len(self.client) + len(self.server) + len(self.completed)
