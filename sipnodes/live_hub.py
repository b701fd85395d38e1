"""One Redis subscription per channel per portal process, shared by all its viewers.

With a subscription of its own, each viewer of a server's live calls read, decoded and
encoded every change itself: a hundred viewers cost the portal's event loop a hundred
times the work of one, and its pages waited behind it. Here a process subscribes once per
channel, decodes each batch of messages once and hands the same object to every viewer's
queue, so a viewer costs little more than its own socket write. The subscription goes
when the channel's last viewer leaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import redis.asyncio
from django.conf import settings
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

T = TypeVar("T")


def client_name(pid: int | None = None) -> str:
    """The name of a process's (by default this one's) subscriptions in Redis's CLIENT
    LIST: which portal process holds them."""
    return f"sipcloud-live-hub-{os.getpid() if pid is None else pid}"


class FellBehind(Exception):
    """The viewer missed messages: its backlog overflowed (its connection is slower than
    the changes), or the shared subscription was reconnected (Redis keeps nothing that was
    published meanwhile). It should read the current state again."""


class ChannelLost(Exception):
    """The shared subscription failed: its viewers' streams end, their browsers reconnect."""


class Viewer(Generic[T]):
    """One viewer's queue of decoded batches, filled by its channel's reader."""

    def __init__(self, backlog: int) -> None:
        self._items: deque[T] = deque()
        self._backlog = backlog
        self._wake = asyncio.Event()
        self._behind = False
        self._error: BaseException | None = None

    def put(self, item: T) -> None:
        if len(self._items) >= self._backlog:
            self.fall_behind()
        else:
            self._items.append(item)
            self._wake.set()

    def fall_behind(self) -> None:
        self._items.clear()
        self._behind = True
        self._wake.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake.set()

    async def get(self, timeout: float) -> T | None:
        """The next batch, or None after `timeout` seconds without one; raises `FellBehind`
        or `ChannelLost`."""
        if not (self._items or self._behind or self._error):
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return None
        if self._error is not None:
            raise ChannelLost(str(self._error)) from self._error
        if self._behind:
            self._behind = False
            raise FellBehind
        return self._items.popleft()


class _Channel(Generic[T]):
    """A channel's one subscription in this process: its reader task and its viewers."""

    def __init__(self, name: str, hub: LiveHub[T]) -> None:
        self.name = name
        self.hub = hub
        self.viewers: set[Viewer[T]] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run(), name=f"live hub {name}")

    async def _run(self) -> None:
        # A dropped connection is made and subscribed again at once (`_next_batch` tells
        # the viewers); a Redis that cannot be reached ends the channel.
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=5,
            client_name=client_name(),
            retry=Retry(NoBackoff(), retries=3),
        )
        pubsub = client.pubsub()
        try:
            await self._subscribe(pubsub)
            while True:
                batch = await self._next_batch(pubsub)
                item = self.hub.decode(batch) if batch else None
                if item is not None:
                    for viewer in self.viewers:
                        viewer.put(item)
                    await asyncio.sleep(self.hub.min_interval)  # what comes waits: one batch
        except Exception as exc:
            self._fail(exc)
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def _subscribe(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(self.name)
        confirmation = await pubsub.get_message(timeout=5)
        if confirmation is None or confirmation["type"] != "subscribe":
            raise ChannelLost(f"no confirmation of the subscription to {self.name}")
        self.ready.set_result(None)

    async def _next_batch(self, pubsub: PubSub) -> list[bytes]:
        """The messages waiting, once one has come. A confirmation here means redis-py
        reconnected and subscribed again: what was published meanwhile is lost."""
        batch: list[bytes] = []
        message = await pubsub.get_message(timeout=None)
        while message is not None and len(batch) < self.hub.max_batch:
            if message["type"] == "message":
                batch.append(message["data"])
            elif message["type"] == "subscribe":
                log.warning("live channel %s resubscribed: its viewers read it again", self.name)
                for viewer in self.viewers:
                    viewer.fall_behind()
            message = await pubsub.get_message(timeout=0)  # already here: same batch
        return batch

    def _fail(self, exc: Exception) -> None:
        log.warning("live channel %s lost: %s", self.name, exc)
        self.hub.forget(self)
        if not self.ready.done():
            self.ready.set_exception(ChannelLost(str(exc)))
            self.ready.exception()  # retrieved here: the viewers waiting get it all the same
        for viewer in self.viewers:
            viewer.fail(exc)


class LiveHub(Generic[T]):
    """The channels this process follows, one subscription each, on the running event loop.

    `decode` turns each batch of published messages into what viewers get (None: nothing
    for them); it runs once per batch, whatever the number of viewers. After a batch the
    reader waits `min_interval` seconds, so a busy channel costs each viewer at most one
    message per interval; a viewer more than `backlog` batches behind gets `FellBehind`.
    """

    def __init__(
        self,
        decode: Callable[[list[bytes]], T | None],
        *,
        min_interval: float,
        max_batch: int,
        backlog: int,
    ) -> None:
        self.decode = decode
        self.min_interval = min_interval
        self.max_batch = max_batch
        self.backlog = backlog
        self._channels: dict[tuple[asyncio.AbstractEventLoop, str], _Channel[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # readers, until they have closed

    @asynccontextmanager
    async def subscribe(self, name: str) -> AsyncIterator[Viewer[T]]:
        """A viewer of channel `name`, subscribed (Redis confirmed it) on entry: every
        message published from then on reaches it."""
        channel = self._channel(name)
        viewer: Viewer[T] = Viewer(self.backlog)
        channel.viewers.add(viewer)
        try:
            await asyncio.shield(channel.ready)  # one viewer leaving cancels no one else's
            yield viewer
        finally:
            channel.viewers.discard(viewer)
            if not channel.viewers:
                self.forget(channel)
                channel.task.cancel()

    def _channel(self, name: str) -> _Channel[T]:
        key = (asyncio.get_running_loop(), name)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(name, self)
            self._tasks.add(channel.task)
            channel.task.add_done_callback(self._tasks.discard)
        return channel

    def forget(self, channel: _Channel[T]) -> None:
        """The next viewer of the channel subscribes anew."""
        key = (channel.task.get_loop(), channel.name)
        if self._channels.get(key) is channel:
            del self._channels[key]
