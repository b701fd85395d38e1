"""The asyncio shell around `Engine`: sockets, one timer, Redis, signals.

Like aioquic's `asyncio/protocol.py`: feed the core, write what it asks,
re-arm a single `call_at` on its next deadline. SIGHUP re-reads the config
(keeping calls and registrations; a new call-back port is bound then, the SIP
sockets stay); SIGTERM ends calls with BYE, drains the events and exits 0.

Two clocks, both owned here: the cores run on the loop's monotonic clock, so a
wall-clock step (NTP) never moves a timer; `_to_wall` turns its instants into
UTC epoch seconds for the timestamps in events and CDRs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import time
from pathlib import Path

from .compiled import running_compiled
from .config import Config, ConfigError, load_config
from .core import Engine
from .eventsink import EventSink, connect
from .media import MediaRelay, MediaSettings
from .mediaports import UdpPorts
from .overload import ADJUST_EVERY, Admission
from .sipmsg import Peer
from .transaction import State
from .transport import CallbackPort, Transports

log = logging.getLogger(__name__)

STOP_GRACE = 3.0  # seconds to wait for BYE answers at SIGTERM
BACKLOG_CHECK_EVERY = 16  # messages between looks at the clock for overload control
GC_THRESHOLD = 20_000  # gen-0 allocations between collections (default 700)
GC_NEVER = 1_000_000_000  # older generations: never by count, see `_collect_garbage`
GC_FULL_EVERY = 300.0  # seconds between full collections
RESTORE_TIMEOUT = 3.0
WALL_STEP = 1.0  # seconds: a larger jump between the clocks is a step of the wall clock (NTP)


class Worker:
    def __init__(self, config_path: str | Path, config: Config) -> None:
        self.config_path = Path(config_path)
        self.config = config
        self.transports = Transports(self._on_data)
        self.stop_event = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wall_offset: float | None = None
        self.engine: Engine | None = None
        self.sink: EventSink | None = None
        self._received = 0
        self._adjusted_at = 0.0
        self.admission = Admission()
        self.ready = False  # until registrations are restored: a REGISTER must not be undone
        self.loop: asyncio.AbstractEventLoop  # the loop `run` runs in
        self.callback_port: CallbackPort  # made in `run`, on the loop

    def _to_wall(self, instant: float) -> float:
        """One offset between the clocks, kept until the wall clock is stepped: worked out
        afresh each time, it would jitter with the loop clock's millisecond ticks and put
        a call's release before its start."""
        offset = time.time() - self.loop.time()
        if self._wall_offset is None or abs(offset - self._wall_offset) > WALL_STEP:
            self._wall_offset = offset
        return instant + self._wall_offset

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self.callback_port = CallbackPort(loop, self._on_callback)
        config = self.config
        port = await self.transports.open(config.listen.address, config.listen.sip_port)
        if port != config.listen.sip_port:
            config = dataclasses.replace(
                config, listen=dataclasses.replace(config.listen, sip_port=port)
            )
            self.config = config
        media = MediaRelay(MediaSettings.from_config(config), UdpPorts(loop, config.listen.address))
        self.engine = engine = Engine(config, loop.time(), to_wall=self._to_wall, media=media)
        self.sink = EventSink(
            connect(config.redis_url),
            config.server_uid,
            config.spool_dir,
            engine.location.all,
            loc_ttl=config.registrar.max_expires + 60,
        )
        try:
            records = await asyncio.wait_for(self.sink.load_location(), RESTORE_TIMEOUT)
        except TimeoutError:
            records = None
        if records:
            count = engine.restore(records, loop.time())
            log.info("restored registrations of %d clients", count)
        # The config (thousands of users) and the restored bindings live as long
        # as the process: keep them out of the cyclic GC's full collections, whose
        # pauses would otherwise stall the socket under load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, GC_NEVER, GC_NEVER)
        loop.call_later(GC_FULL_EVERY, self._collect_garbage)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        self.sink.start()
        self.ready = True
        self._sync_callback_port(config.listen.callback_port)
        engine.status("started", loop.time())
        self._flush()
        log.info(
            "server %s (%s) listening on %s:%d udp+tcp, %s engine",
            config.server_id,
            config.name,
            config.listen.address,
            port,
            "compiled" if running_compiled() else "Python",
        )
        await self.stop_event.wait()
        await self._stop()
        return 0

    async def _stop(self) -> None:
        assert self.engine is not None and self.sink is not None
        log.info("stopping: ending %d calls", len(self.engine.b2bua.calls))
        loop = self.loop
        self.engine.stop(loop.time())
        self._flush()
        deadline = loop.time() + STOP_GRACE
        while self._waiting() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.engine.status("stopped", loop.time())
        self._flush()
        self.callback_port.close()
        if self._timer is not None:
            self._timer.cancel()
        self.transports.close()
        await self.sink.close(timeout=3.0)
        log.info("stopped")

    def _waiting(self) -> bool:
        assert self.engine is not None
        live = (State.CALLING, State.TRYING, State.PROCEEDING)
        return any(tx.state in live for tx in self.engine.layer.client.values())

    def reload(self) -> None:
        """SIGHUP: apply the new file; a bad file is refused and the old config kept."""
        assert self.engine is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        old = self.config.listen
        if (new.listen.address, new.listen.sip_port) != (old.address, old.sip_port) and (
            new.listen.sip_port != 0
        ):
            log.warning("listen address/SIP port changed: takes effect at restart")
        # The SIP sockets stay as they are; the rest of `listen` (the media block, the
        # call-back port) is new.
        listen = dataclasses.replace(new.listen, address=old.address, sip_port=old.sip_port)
        new = dataclasses.replace(
            new,
            listen=listen,
            server_id=self.config.server_id,
            server_uid=self.config.server_uid,
        )
        self.config = new
        self.engine.reload(new, self.loop.time())
        self._sync_callback_port(listen.callback_port)
        log.info("config reloaded: %d users", len(new.users))
        self._flush()

    def _sync_callback_port(self, port: int) -> None:
        """Listen for call-backs on `port` (0: not at all); SIP and calls are not touched.

        A port that cannot be bound is logged and the worker serves SIP without it:
        the call-back service is not worth a crash loop.
        """
        callback = self.callback_port
        if port == callback.port:
            return
        if callback.port:
            log.info("call-back port %d closed", callback.port)
            callback.close()
        if port == 0:
            return
        address = self.config.listen.address
        try:
            callback.open(address, port)
        except OSError as exc:
            log.error("cannot listen for call-backs on %s:%d udp: %s", address, port, exc)
            return
        log.info("call-back service listening on %s:%d udp", address, port)

    def _on_callback(self, batch: list[tuple[bytes, tuple[str, int]]]) -> None:
        """A batch from the call-back port (bounded by the transport), then one flush."""
        engine = self.engine
        if engine is None:
            return
        now = self.loop.time()
        for data, source in batch:
            try:
                engine.receive_callback(data, source, now)
            except Exception:  # a bug, not bad input: log it and keep serving
                log.exception("error handling a call-back datagram from %s:%s", *source)
        self._flush()

    def _on_data(self, data: bytes, peer: Peer) -> None:
        if self.engine is None or not self.ready:
            return  # starting: the peer retransmits
        self._received += 1
        if self._received % BACKLOG_CHECK_EVERY == 0:
            self._check_backlog()
        try:
            self.engine.receive(data, peer, self.loop.time())
        except Exception:  # a bug, not bad input: log it and keep serving
            log.exception("error handling a message from %s:%s", peer.host, peer.port)
        self._flush()

    def _check_backlog(self) -> None:
        engine = self.engine
        assert engine is not None
        now = self.loop.time()
        if now - self._adjusted_at < ADJUST_EVERY:
            return
        self._adjusted_at = now
        backlog = self.transports.udp_backlog()
        before = engine.admit
        engine.admit = self.admission.adjust(backlog)
        if before == 1.0 and engine.admit < 1.0:
            log.warning("overloaded (%d bytes queued): refusing new requests in part", backlog)
        elif before < 1.0 and engine.admit == 1.0:
            log.warning("load back to normal; %d requests refused so far", engine.shed)

    def _collect_garbage(self) -> None:
        """The cyclic GC's older generations, on a clock rather than by allocation count.

        Under load the worker holds the messages of every transaction for its 32 s
        (Timer J/L), hundreds of thousands of objects: a collection of the older
        generations scans them all and stalled the socket for 150-190 ms every few
        seconds at 800 calls/s, long enough for overload control to refuse calls at
        two thirds of the CPU. Traffic leaves no cycles (a call breaks its own when
        forgotten), so only young objects are collected by count, and the rest, for
        whatever a rarer path leaves behind, every `GC_FULL_EVERY`.
        """
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        log.info("full garbage collection: %d objects freed in %.0f ms", found, took * 1e3)
        self.loop.call_later(GC_FULL_EVERY, self._collect_garbage)

    def _on_timer(self) -> None:
        assert self.engine is not None
        self._timer = None
        self._timer_at = None
        if self.engine.admit < 1.0:
            self._check_backlog()  # no traffic may come to raise it again
        try:
            self.engine.handle_timer(self.loop.time() + 0.001)
        except Exception:
            log.exception("error in a timer")
        self._flush()

    def _flush(self) -> None:
        engine = self.engine
        assert engine is not None and self.sink is not None
        if engine.outbox:
            for item in engine.outbox:
                self.transports.send(item)
            engine.outbox.clear()
        if engine.callback_outbox:
            for data, address in engine.callback_outbox:
                self.callback_port.send(data, address)
            engine.callback_outbox.clear()
        if engine.events:
            self.sink.put(list(engine.events))
            engine.events.clear()
        ops = engine.location.ops
        if ops:
            self.sink.put_location(list(ops))
            ops.clear()
        if engine.guard.changed:
            self.sink.put_blocked(engine.guard.block_list(self.loop.time()))
            engine.guard.changed = False
        deadline = engine.get_timer()
        armed = self._timer_at
        if armed is not None and deadline is not None and armed <= deadline:
            return  # fires no later than needed: `_on_timer` re-arms for the rest
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
