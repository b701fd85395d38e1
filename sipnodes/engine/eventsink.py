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
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from .events import (
    STREAM_KEY,
    STREAM_MAXLEN,
    CallData,
    Event,
    MalformedEvent,
    guard_key,
    live_calls_key,
    live_channel,
)
from .location import Binding, LocationOp, location_key

log = logging.getLogger(__name__)

BATCH = 500
RETRY_INTERVAL = 1.0
BLOCK_LIST_TTL = 3600  # the longest block: a list nobody refreshes goes with it
# After the first event of a quiet spell, wait this long so that what follows under load
# goes to Redis in the same round trip (a few ms against the live view's one second).
# Not when a registration is pending: the phone has its 200 OK, and a worker killed in
# those milliseconds would come back without the binding.
GATHER_WINDOW = 0.005
SOCKET_TIMEOUT = 2.0  # per read or write; then the batch is spooled
CONNECT_TIMEOUT = 1.0
_ERRORS = (hiredis.HiredisError, OSError, asyncio.TimeoutError)
_MAXLEN = str(STREAM_MAXLEN)

Command = tuple[str | bytes, ...]


class RedisConnection:
    """The worker's few Redis commands, pipelined over one connection.

    Not redis-py: importing it costs each worker about 4.5 MiB of its ~20 and
    0.1 s of CPU at start (the client, its command tables, and the email,
    importlib.metadata and zipfile modules it pulls in). hiredis parses the
    replies, as it does for redis-py when installed. One batch at a
    time (the sink's task); a failed or cancelled batch drops the connection,
    so a half-read reply is never taken for the next one, and the next batch
    reconnects. Reply errors raise `hiredis.ReplyError` after the whole batch
    is read, like redis-py's pipelines.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis URL must be redis://, rediss:// or unix://, not {url!r}")
        query = parse_qs(parts.query)
        db = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.path = parts.path if parts.scheme == "unix" else None
        self.tls = parts.scheme == "rediss"
        self.setup: list[Command] = []  # sent on each new connection
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            self.setup.append(("AUTH", *([user] if user else []), unquote(parts.password)))
        if db and int(db):
            self.setup.append(("SELECT", db))
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._parser = hiredis.Reader()

    async def execute(self, commands: Sequence[Command], transaction: bool = False) -> list[object]:
        """Send the commands in one write, read every reply; MULTI/EXEC around them
        when `transaction`. Returns the commands' replies."""
        if transaction:
            commands = [("MULTI",), *commands, ("EXEC",)]
        try:
            if self._streams is None:
                await self._connect()
            replies = await self._round_trip(commands)
        except BaseException:
            self._drop()
            raise
        if transaction:
            replies = replies[-1] if isinstance(replies[-1], list) else replies
        _raise_first_error(replies)
        return replies

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        [flat] = await self.execute([("HGETALL", key)])
        assert isinstance(flat, list)
        pairs = iter(flat)
        return dict(zip(pairs, pairs, strict=True))

    async def aclose(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._drop()
            await writer.wait_closed()

    async def _connect(self) -> None:
        if self.path is not None:
            opening = asyncio.open_unix_connection(self.path)
        else:
            tls = ssl.create_default_context() if self.tls else None
            opening = asyncio.open_connection(self.host, self.port, ssl=tls)
        self._streams = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
        self._parser = hiredis.Reader()  # nothing left from a dropped connection
        if self.setup:
            _raise_first_error(await self._round_trip(self.setup))

    async def _round_trip(self, commands: Sequence[Command]) -> list[object]:
        assert self._streams is not None
        reader, writer = self._streams
        writer.write(b"".join(_pack(command) for command in commands))
        await asyncio.wait_for(writer.drain(), SOCKET_TIMEOUT)
        replies = []
        for _ in commands:
            while (reply := self._parser.gets()) is False:
                data = await asyncio.wait_for(reader.read(65536), SOCKET_TIMEOUT)
                if not data:
                    raise ConnectionError("redis closed the connection")
                self._parser.feed(data)
            replies.append(reply)
        return replies

    def _drop(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _raise_first_error(replies: list[object]) -> None:
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise reply


def _pack(command: Command) -> bytes:
    """A command as RESP: an array of bulk strings."""
    args = [arg.encode() if isinstance(arg, str) else arg for arg in command]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def connect(url: str) -> RedisConnection:
    return RedisConnection(url)


class EventSink:
    def __init__(
        self,
        redis_client: RedisConnection,
        server_uid: str,
        spool_dir: str,
        snapshot: Callable[[], list[Binding]],
        loc_ttl: int = 7200 + 60,
    ) -> None:
        self.loc_ttl = loc_ttl  # >= the longest binding: a backstop, see location.py
        self.redis = redis_client
        self.server_uid = server_uid  # keys the live state; events carry the database id
        self.spool = Path(spool_dir) / "events.spool"
        self.snapshot = snapshot  # the engine's live bindings, for a full re-sync
        self.queue: deque[Event] = deque()
        self.loc_ops: deque[LocationOp] = deque()
        self.loc_dirty = False
        self.blocked: bytes | None = None  # the guard's block list, to write
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

    def put_blocked(self, block_list: bytes) -> None:
        """The sources blocked for guessing passwords (JSON), for the server's pages."""
        self.blocked = block_list
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
            if self.connected:
                await self._wake.wait()
            else:  # retry the spool even when nothing new comes
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_INTERVAL)
            if not self.loc_ops:
                await asyncio.sleep(GATHER_WINDOW)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; True when nothing is left in memory or spool."""
        try:
            await self._flush_events()
            await self._flush_location()
            await self._flush_blocked()
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
        calls_key = live_calls_key(self.server_uid)
        commands: list[Command] = []
        if self._reset_calls:  # a (re)started worker has no calls in progress
            commands.append(("DEL", calls_key))
        for event in batch:
            entry = [item for pair in event.fields().items() for item in pair]
            commands.append(("XADD", STREAM_KEY, "MAXLEN", "~", _MAXLEN, "*", *entry))
            if isinstance(event.data, CallData):
                text = event.to_json()
                if event.data.state == "released":
                    commands.append(("HDEL", calls_key, event.data.call_id))
                else:
                    commands.append(("HSET", calls_key, event.data.call_id, text))
                if live:
                    commands.append(("PUBLISH", live_channel(self.server_uid), text))
        await self.redis.execute(commands)
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
        key = location_key(self.server_uid)
        if self.loc_dirty:
            bindings = self.snapshot()
            commands: list[Command] = [("DEL", key)]
            commands += [("HSET", key, b.field, b.to_record()) for b in bindings]
            if bindings:
                commands.append(("EXPIRE", key, str(self.loc_ttl)))
            await self.redis.execute(commands, transaction=True)
            self.loc_dirty = False
            self.loc_ops.clear()
            return
        if not self.loc_ops:
            return
        ops = list(self.loc_ops)
        commands = []
        touched = False
        for op in ops:
            if op.op == "set" and op.binding is not None:
                commands.append(("HSET", key, op.field, op.binding.to_record()))
                touched = True
            else:
                commands.append(("HDEL", key, op.field))
        if touched:
            commands.append(("EXPIRE", key, str(self.loc_ttl)))
        await self.redis.execute(commands)
        for _ in ops:
            self.loc_ops.popleft()

    async def _flush_blocked(self) -> None:
        block_list = self.blocked
        if block_list is None:
            return
        key = guard_key(self.server_uid)
        await self.redis.execute([("SET", key, block_list, "EX", str(BLOCK_LIST_TTL))])
        if self.blocked is block_list:
            self.blocked = None

    async def load_location(self) -> dict[bytes, bytes] | None:
        try:
            return await self.redis.hgetall(location_key(self.server_uid))
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
