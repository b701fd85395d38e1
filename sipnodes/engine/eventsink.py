"""Writes events to the Redis Stream, or to a spool file while Redis is away.

Order is kept: once anything is spooled, new events are appended behind it
and the file is replayed, oldest first, before live writing resumes. A
replay that fails half-way keeps exactly the unsent tail. The location table
is written through here too; after an outage it is re-synced whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .events import (
    STREAM_KEY,
    STREAM_MAXLEN,
    CallData,
    Event,
    MalformedEvent,
    live_calls_key,
    live_channel,
)
from .location import Binding, LocationOp, location_key

log = logging.getLogger(__name__)

BATCH = 500
RETRY_INTERVAL = 1.0
_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def connect(url: str) -> aioredis.Redis:
    return aioredis.from_url(  # type: ignore[no-any-return,no-untyped-call]
        url,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


class EventSink:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        server_id: int,
        spool_dir: str,
        snapshot: Callable[[], list[Binding]],
        loc_ttl: int = 7200 + 60,
    ) -> None:
        self.loc_ttl = loc_ttl  # >= the longest binding: a backstop, see location.py
        self.redis = redis_client
        self.server_id = server_id
        self.spool = Path(spool_dir) / "events.spool"
        self.snapshot = snapshot  # the engine's live bindings, for a full re-sync
        self.queue: deque[Event] = deque()
        self.loc_ops: deque[LocationOp] = deque()
        self.loc_dirty = False
        self.connected = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reset_calls = True
        self.sent = 0
        self.spooled = 0

    # ---- producer side (called from the shell, never blocks) -----------------

    def put(self, events: list[Event]) -> None:
        if events:
            self.queue.extend(events)
            self._wake.set()

    def put_location(self, ops: list[LocationOp]) -> None:
        if ops:
            self.loc_ops.extend(ops)
            self._wake.set()

    # ---- consumer ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_INTERVAL)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; True when nothing is left in memory or spool."""
        try:
            await self._flush_events()
            await self._flush_location()
        except _ERRORS as exc:
            if self.connected:
                log.warning("redis unreachable, spooling events: %s", exc)
            self.connected = False
            self._spool_queue()
            self.loc_dirty = True
            return False
        if not self.connected:
            log.info("redis reachable again")
        self.connected = True
        return not self.queue and not self.spool.exists()

    async def _flush_events(self) -> None:
        if self.spool.exists():
            self._spool_queue()  # behind what is already waiting, to keep order
            await self._replay()
        while self.queue:
            batch = [self.queue[i] for i in range(min(BATCH, len(self.queue)))]
            await self._write(batch)
            for _ in batch:
                self.queue.popleft()
            self.sent += len(batch)

    async def _write(self, batch: list[Event], live: bool = True) -> None:
        """XADD the batch; call events also update the live-calls hash and, unless
        they are replayed from the spool (old news), are PUBLISHed."""
        pipe = self.redis.pipeline(transaction=False)
        calls_key = live_calls_key(self.server_id)
        if self._reset_calls:  # a (re)started worker has no calls in progress
            pipe.delete(calls_key)
        for event in batch:
            fields: dict[Any, Any] = event.fields()
            pipe.xadd(STREAM_KEY, fields, maxlen=STREAM_MAXLEN, approximate=True)
            if isinstance(event.data, CallData):
                text = event.to_json()
                if event.data.state == "released":
                    pipe.hdel(calls_key, event.data.call_id)
                else:
                    pipe.hset(calls_key, event.data.call_id, text)
                if live:
                    pipe.publish(live_channel(self.server_id), text)
        await pipe.execute()
        self._reset_calls = False

    def _spool_queue(self) -> None:
        if not self.queue:
            return
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a", encoding="utf-8") as f:
            for event in self.queue:
                f.write(event.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.spooled += len(self.queue)
        self.queue.clear()

    async def _replay(self) -> None:
        lines = [ln for ln in self.spool.read_text(encoding="utf-8").splitlines() if ln.strip()]
        done = 0
        try:
            while done < len(lines):
                chunk = lines[done : done + BATCH]
                events = []
                for line in chunk:
                    try:
                        events.append(Event.from_json(line))
                    except MalformedEvent as exc:
                        log.warning("skipping unreadable spool line %r: %s", line[:80], exc)
                await self._write(events, live=False)
                done += len(chunk)
                self.sent += len(events)
        finally:
            if done >= len(lines):
                self.spool.unlink(missing_ok=True)
                log.info("replayed %d spooled events", done)
            elif done:
                tmp = self.spool.with_suffix(".tmp")
                tmp.write_text("".join(ln + "\n" for ln in lines[done:]), encoding="utf-8")
                tmp.replace(self.spool)

    async def _flush_location(self) -> None:
        key = location_key(self.server_id)
        if self.loc_dirty:
            bindings = self.snapshot()
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(key)
            for b in bindings:
                pipe.hset(key, b.field, b.to_record())
            if bindings:
                pipe.expire(key, self.loc_ttl)
            await pipe.execute()
            self.loc_dirty = False
            self.loc_ops.clear()
            return
        if not self.loc_ops:
            return
        ops = list(self.loc_ops)
        pipe = self.redis.pipeline(transaction=False)
        touched = False
        for op in ops:
            if op.op == "set" and op.binding is not None:
                pipe.hset(key, op.field, op.binding.to_record())
                touched = True
            else:
                pipe.hdel(key, op.field)
        if touched:
            pipe.expire(key, self.loc_ttl)
        await pipe.execute()
        for _ in ops:
            self.loc_ops.popleft()

    async def load_location(self) -> dict[bytes, bytes] | None:
        try:
            records: dict[bytes, bytes] = await self.redis.hgetall(  # type: ignore[misc]
                location_key(self.server_id)
            )
            return records
        except _ERRORS as exc:
            log.warning("could not restore registrations from redis: %s", exc)
            return None

    async def close(self, timeout: float) -> None:
        """Final drain; whatever cannot be written in time stays in the spool."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, *_ERRORS):
                await asyncio.wait_for(self._task, timeout)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except _ERRORS:
            self._spool_queue()
        self._spool_queue()
        with contextlib.suppress(*_ERRORS):
            await asyncio.wait_for(self.redis.aclose(), 1.0)
