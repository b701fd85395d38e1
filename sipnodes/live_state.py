"""A worker's live state in Redis: what must go when its server goes, and its calls as they
change, for the live calls page.

The worker keeps its registrations (`sipcloud:vs:<uid>:loc`) and its calls in progress
(`sipcloud:vs:<uid>:calls`) in Redis so that a restart finds them again, and the sources it
blocks for guessing passwords (`sipcloud:vs:<uid>:blocked`) for the server's pages. All are
keyed by the server's uid, never reused, so a server can never restore another's state;
deleting or purging a server removes them, rather than leaving them to their TTL.
"""

import datetime
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from functools import cached_property

import redis
import redis.asyncio
from django.conf import settings
from django.db import transaction

from sipnodes.engine.config import uid_before_uids
from sipnodes.engine.events import (
    CallData,
    Event,
    MalformedEvent,
    guard_key,
    live_calls_key,
    live_channel,
)
from sipnodes.engine.location import location_key
from sipnodes.live_hub import ChannelLost, FellBehind, LiveHub
from sipnodes.models import VirtualServer

log = logging.getLogger(__name__)


def live_state_keys(*, server_uid: uuid.UUID | str, server_id: int | None = None) -> list[str]:
    """The keys of one server's live state; with its id, also those a worker whose config
    was rendered before servers had a uid writes (`id-<id>`, sipnodes.engine.config)."""
    uids = [str(server_uid)] + ([uid_before_uids(server_id)] if server_id is not None else [])
    return [key for uid in uids for key in (location_key(uid), live_calls_key(uid), guard_key(uid))]


@dataclass(frozen=True)
class BlockedSource:
    """A source address the worker drops for guessing passwords (sipnodes.engine.guard)."""

    source: str
    until: datetime.datetime
    blocks: int  # how many times it has been blocked: each block lasts twice as long
    user: str  # the user it last guessed for


def blocked_sources(*, server_uid: uuid.UUID | str) -> list[BlockedSource]:
    """The worker's block list, still in force; empty when Redis cannot be reached."""
    return blocked_sources_of(server_uids=[server_uid])[str(server_uid)]


def blocked_sources_of(*, server_uids: list[uuid.UUID | str]) -> dict[str, list[BlockedSource]]:
    """The block lists of several servers, read in one round trip (the operator pages)."""
    uids = [str(uid) for uid in server_uids]
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in uids:
            pipe.get(guard_key(uid))
        raws = pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not read the block lists: %s", exc)
        raws = [None] * len(uids)
    finally:
        client.close()
    return {uid: _block_list(uid, raw) for uid, raw in zip(uids, raws, strict=True)}


def _block_list(uid: str, raw: bytes | None) -> list[BlockedSource]:
    now = time.time()
    try:
        return [
            BlockedSource(
                e["source"],
                datetime.datetime.fromtimestamp(e["until"], datetime.UTC),
                int(e["blocks"]),
                str(e["user"]),
            )
            for e in (json.loads(raw) if raw else [])
            if e["until"] > now
        ]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable block list of %s: %s", uid, exc)
        return []


def live_state_delete(*, server_uid: uuid.UUID | str, server_id: int | None = None) -> None:
    """Delete a server's live state. A Redis that cannot be reached is logged, not raised:
    the server is gone either way, and its keys' TTL is the backstop."""
    keys = live_state_keys(server_uid=server_uid, server_id=server_id)
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        client.delete(*keys)
    except redis.RedisError as exc:
        log.warning("could not delete the live state %s: %s", keys, exc)
    finally:
        client.close()


def live_state_delete_on_commit(server: VirtualServer) -> None:
    # Read now: a server deleted in the same transaction has no pk by commit time.
    server_uid, server_id = server.uid, server.pk
    transaction.on_commit(lambda: live_state_delete(server_uid=server_uid, server_id=server_id))


@dataclass(frozen=True)
class LiveCall:
    """A call's last state change as its worker reported it (`ts`: UTC epoch seconds)."""

    call_id: str
    caller: str
    callee: str
    state: str  # initiated, ringing, answered or released
    ts: float


@dataclass(frozen=True)
class LiveCalls:
    """The calls in progress now (the worker's calls hash), or the changes since the last
    `LiveCalls`, oldest first; neither on a quiet heartbeat. `now` is this machine's
    clock, for elapsed times."""

    now: float
    calls: list[LiveCall] | None = None
    changes: list[LiveCall] | None = None

    @cached_property
    def as_json(self) -> str:
        """What the live page reads: `now` and the calls. Encoded once: every viewer of a
        server in this process gets the same batch of changes."""
        calls = self.calls if self.calls is not None else self.changes or []
        return json.dumps({"now": self.now, "calls": [asdict(call) for call in calls]})


MAX_BATCH = 500  # changes sent together at most
# A viewer gets at most ten messages a second: the changes of a busy server are gathered
# for up to 0.1 s, so a hundred viewers of it cost the portal a thousand sends a second at
# most, whatever its call rate (bench/live_view_bench.py); a quiet server's change still
# goes out the moment it comes.
MIN_INTERVAL = 0.1
# Batches a viewer may lag behind (ten seconds' worth) before it is sent the calls in
# progress again instead: a stalled connection does not grow the portal's memory.
BACKLOG = 100


def _live_call(text: bytes) -> LiveCall | None:
    try:
        event = Event.from_json(text.decode("utf-8", errors="replace"))
    except MalformedEvent as exc:
        log.warning("ignoring a malformed live call event: %s", exc)
        return None
    data = event.data
    if not isinstance(data, CallData):
        return None
    return LiveCall(data.call_id, data.caller, data.callee, data.state, event.ts)


def _changes(messages: list[bytes]) -> LiveCalls | None:
    changes = [call for text in messages if (call := _live_call(text))]
    return LiveCalls(now=time.time(), changes=changes) if changes else None


_hub = LiveHub(_changes, min_interval=MIN_INTERVAL, max_batch=MAX_BATCH, backlog=BACKLOG)


async def _calls_in_progress(server_uid: str) -> LiveCalls:
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5)
    async with client:  # closed at once: a stream holds no connection of its own
        values = await client.hgetall(live_calls_key(server_uid))
    return LiveCalls(now=time.time(), calls=[c for v in values.values() if (c := _live_call(v))])


async def live_calls_follow(
    *, server_uid: uuid.UUID | str, heartbeat: float = 15.0
) -> AsyncIterator[LiveCalls]:
    """The server's calls in progress, then its worker's changes as they are published,
    for as long as the caller iterates; a bare `LiveCalls` after `heartbeat` seconds
    without news. Ends if Redis is lost (a browser reconnects and catches up).

    Subscribed before the calls hash is read, so no change falls between the two; a
    change may come both in the hash and after it (the newer `ts` wins, browser side).
    The subscription is this process's one for the server (`LiveHub`): changes that come
    within `MIN_INTERVAL` of the last batch go out together in the next; a caller that
    falls behind, or misses changes while Redis reconnects, gets the calls in progress again.
    """
    uid = str(server_uid)
    try:
        async with _hub.subscribe(live_channel(uid)) as viewer:
            yield await _calls_in_progress(uid)
            while True:
                try:
                    update = await viewer.get(timeout=heartbeat)
                except FellBehind:
                    update = await _calls_in_progress(uid)
                yield update if update is not None else LiveCalls(now=time.time())
    except ChannelLost:
        return  # the hub logged it, once for all its viewers
