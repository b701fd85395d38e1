"""The Redis loop: reads the event stream as one member of the consumer group `ingest`.

At-least-once: an entry is acknowledged only after the transaction that wrote
it committed (`ingest_batch`), and writing it again is harmless. Entries a dead
consumer held are claimed once idle; malformed ones go to the dead-letter stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from django.db import DatabaseError, InterfaceError, connection
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from sipnodes.engine.events import STREAM_KEY

from .batch import BadEntry, ingest_batch
from .parse import Entry

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = f"{STREAM_KEY}:dead"
DEAD_LETTER_MAXLEN = 100_000
GROUP = "ingest"
BATCH_SIZE = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000  # a consumer silent this long is taken for dead; its entries are claimed
CLAIM_INTERVAL = 30.0
# A batch smaller than BATCH_SIZE is followed by a pause, so that the next read starts this
# long after the previous one: under a steady trickle of events, one transaction every 3 s
# (each costs 2-3 ms of CPU whatever it holds: read, lock, write, commit, XACK) rather than
# one per event or two. An event reaches the database within about 3 s; a backlog is read
# in full batches, without pauses.
GATHER = 3.0
SLEEP_SLICE = 1.0
TRIM_INTERVAL = 10.0  # seconds between trims of what every group has acknowledged
FORGET_IDLE_MS = 24 * 3600 * 1000  # a consumer with nothing pending, silent this long, is removed
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Backoff:
    """0.2 s doubling to 5 s; reset after a success."""

    delay: float = BACKOFF_FIRST

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class IngestConsumer:
    """Reads the event stream as one member of the consumer group and ingests it.

    At-least-once: an entry is acknowledged only after the transaction that
    wrote it committed, and writing it again is harmless.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        stream: str = STREAM_KEY,
        dead_letter_stream: str = DEAD_LETTER_KEY,
        group: str = GROUP,
        name: str | None = None,
        batch_size: int = BATCH_SIZE,
        block_ms: int = BLOCK_MS,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        forget_idle_ms: int = FORGET_IDLE_MS,
        gather: float = GATHER,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.dead_letter_stream = dead_letter_stream
        self.group = group
        self.name = name or consumer_name()
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.forget_idle_ms = forget_idle_ms
        self.gather = gather
        self.stopping = False
        self._client: redis.Redis | None = None
        self._db_backoff = _Backoff()
        self._redis_backoff = _Backoff()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self.stopping = True

    @contextlib.contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the loop cleanly; the previous handlers come back after."""
        signums = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, lambda *_: self.stop()) for signum in signums}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def run(self, *, drain: bool = False) -> None:
        """Consume until stopped; with `drain`, return once no entry is left to read."""
        log.info("ingest consumer %s reading %s as group %s", self.name, self.stream, self.group)
        try:
            while not self.stopping:
                try:
                    if self._serve(drain=drain):
                        return
                except RedisError as exc:
                    delay = self._redis_backoff.next()
                    log.warning(
                        "redis unavailable (%s); reconnecting in %.1fs", _one_line(exc), delay
                    )
                    self._disconnect()
                    self._sleep(delay)
        finally:
            self._disconnect()

    def _serve(self, *, drain: bool) -> bool:
        """Own pending entries first (a restart), then dead consumers', then new ones."""
        self._ensure_group()
        self._redis_backoff.reset()
        self._handle_own_pending()
        self._claim_stale()
        next_claim = time.monotonic() + CLAIM_INTERVAL
        next_trim = time.monotonic()
        while not self.stopping:
            read_at = time.monotonic()
            entries = self._read(">", block=None if drain else self.block_ms)
            if entries:
                self._handle(entries)
            elif drain:
                self.trim()
                return True
            if time.monotonic() >= next_claim:
                self._claim_stale()
                next_claim = time.monotonic() + CLAIM_INTERVAL
            if time.monotonic() >= next_trim:
                self.trim()
                next_trim = time.monotonic() + TRIM_INTERVAL
            if entries and len(entries) < self.batch_size and not drain:
                self._sleep(read_at + self.gather - time.monotonic())
        return False

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.redis_url,
                socket_timeout=self.block_ms / 1000 + 5.0,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),  # our own loop retries, with backoff
            )
        return self._client

    def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError):
                self._client.close()
            self._client = None

    def _ensure_group(self) -> None:
        try:
            self._redis().xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: bytes | str, block: int | None) -> list[Entry]:
        reply = self._redis().xreadgroup(
            self.group, self.name, {self.stream: start}, count=self.batch_size, block=block
        )
        return reply[0][1] if reply else []

    def _handle_own_pending(self) -> None:
        last: bytes | str = "0"
        while not self.stopping:
            entries = self._read(last, block=None)
            if not entries:
                return
            self._handle(entries)
            last = entries[-1][0]

    def _claim_stale(self) -> None:
        start: bytes | str = "0-0"
        while not self.stopping:
            start, entries, *_ = self._redis().xautoclaim(
                self.stream,
                self.group,
                self.name,
                min_idle_time=self.claim_idle_ms,
                start_id=start,
                count=self.batch_size,
            )
            if entries:
                log.info("claimed %d entries idle for over %d ms", len(entries), self.claim_idle_ms)
                self._handle(entries)
            if start in (b"0-0", "0-0"):
                break
        self._forget_dead_consumers()

    def trim(self) -> bytes | None:
        """Delete the entries every consumer group has acknowledged: those older than the
        oldest entry still pending, or, with none pending, than the next undelivered one
        (`XTRIM MINID ~ LIMIT 0`: whole nodes of about 100 entries, as many as there are).
        Returns the bound used."""
        client = self._redis()
        bound: tuple[int, int] | None = None
        for group in client.xinfo_groups(self.stream):
            if group["pending"]:
                oldest = _stream_id(client.xpending(self.stream, group["name"])["min"])
            else:
                ms, seq = _stream_id(group["last-delivered-id"])
                oldest = (ms, seq + 1)
            bound = oldest if bound is None else min(bound, oldest)
        if bound is None or bound <= (0, 1):
            return None
        minid = f"{bound[0]}-{bound[1]}".encode()
        client.xtrim(self.stream, minid=minid, approximate=True, limit=0)  # 0: all of them
        return minid

    def _forget_dead_consumers(self) -> None:
        """Each process start is a new consumer name; drop the old ones once they hold nothing."""
        for consumer in self._redis().xinfo_consumers(self.stream, self.group):
            name = consumer["name"].decode()
            if (
                name != self.name
                and not consumer["pending"]
                and consumer["idle"] > self.forget_idle_ms
            ):
                self._redis().xgroup_delconsumer(self.stream, self.group, name)

    def _handle(self, entries: list[Entry]) -> None:
        """Ingest, retrying the same entries while the database is away; then acknowledge."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = ingest_batch(entries)
                break
            except (DatabaseError, InterfaceError) as exc:
                delay = self._db_backoff.next()
                log.warning(
                    "database unavailable (%s); %d entries kept pending; attempt %d, next in %.1fs",
                    _one_line(exc),
                    len(entries),
                    attempt,
                    delay,
                )
                with contextlib.suppress(DatabaseError, InterfaceError):
                    connection.close()
                if self.stopping:
                    return
                self._sleep(delay)
        self._db_backoff.reset()
        self._acknowledge(entries, result.bad)

    def _acknowledge(self, entries: list[Entry], bad: tuple[BadEntry, ...]) -> None:
        """Dead letters and XACK in one MULTI: either both happen or the batch is re-read."""
        ids = [entry_id for entry_id, _ in entries]
        if not bad:
            self._redis().xack(self.stream, self.group, *ids)
            return
        pipe = self._redis().pipeline(transaction=True)
        for entry in bad:
            log.warning("dead-lettering entry %s: %s", entry.entry_id.decode(), entry.error)
            pipe.xadd(
                self.dead_letter_stream,
                {
                    **entry.fields,
                    b"ingest_error": entry.error.encode(),
                    b"ingest_entry_id": entry.entry_id,
                },
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        pipe.xack(self.stream, self.group, *ids)
        pipe.execute()

    def _sleep(self, seconds: float) -> None:
        """Sleep, in slices of up to SLEEP_SLICE, so a stop is seen within one. (Every
        wake-up costs CPU: at 0.1 s, the gather pause of each batch cost about 1 ms.)"""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, SLEEP_SLICE))


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
