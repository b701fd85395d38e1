"""Web phone sessions, as the portal sees them: open one, act on it, follow its state.

The portal never talks SIP or WebRTC: it asks the server's gateway over Redis
(`sipnodes/webphone/channels.py`) and has the host's node agent start the gateway when
none is running. Sessions live only in Redis; nothing here touches the database.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings

from sipnodes.models import LocalUser, VirtualServer
from sipnodes.provisioning import host_queue
from sipnodes.webphone import channels

ANSWER_TIMEOUT = 25  # seconds: a gateway that has to start first answers within a few
FOLLOW_TICK = 1.0
REFRESH_EVERY = 2.0  # the stream keeps its session alive, and checks its gateway, this often
LOST_AFTER = 2 * channels.ALIVE_TTL  # no gateway, or another boot's, for this long: lost


class SessionNotFound(Exception):
    """No such session for this member and server (expired, or someone else's)."""


class GatewayUnavailable(Exception):
    """The gateway did not answer in time: it could not be started, or it is stuck."""


@dataclass(frozen=True)
class Update:
    """One event for the page: the session's `state`, `lost` (its gateway went away),
    `closed`, or `ping` (nothing new; keeps proxies from closing the stream)."""

    kind: str
    data: dict[str, Any]


def _client() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5)


async def _ensure_gateway(client: redis.asyncio.Redis, server: VirtualServer) -> None:
    """Ask the host's agent to start the gateway unless it says it is alive."""
    if not await client.exists(channels.alive_key(server.pk)):
        queue = host_queue(server.host.name)
        await sync_to_async(current_app.send_task)(
            "sipnodes.tasks.start_webphone", args=[server.pk], queue=queue
        )


async def _ask(
    client: redis.asyncio.Redis, server_id: int, session_id: str, action: str, **arguments: Any
) -> dict[str, Any]:
    request_id, body = channels.request(session_id, action, **arguments)
    await client.lpush(channels.requests_key(server_id), body)
    reply = await client.blpop([channels.reply_key(request_id)], timeout=ANSWER_TIMEOUT)
    if reply is None:
        raise GatewayUnavailable(f"no answer to {action} within {ANSWER_TIMEOUT} s")
    return dict(json.loads(reply[1]))


async def webphone_open(
    *, server: VirtualServer, local_user: LocalUser, member_id: int
) -> tuple[str, dict[str, Any]]:
    """A new session registering `local_user` through the server's gateway (started if
    need be). Returns its id and the gateway's answer: `ok`, or the registrar's refusal."""
    session_id = channels.new_id()
    key = channels.session_key(session_id)
    client = _client()
    try:
        await client.hset(
            key,
            mapping={"server": server.pk, "number": local_user.number, "member": member_id},
        )
        await client.expire(key, channels.SESSION_TTL)
        await _ensure_gateway(client, server)
        answer = await _ask(client, server.pk, session_id, "open", number=local_user.number)
        if answer.get("ok"):
            await client.hset(key, "boot", str(answer.get("boot", "")))
        else:
            await client.delete(key)
        return session_id, answer
    finally:
        await client.aclose()


async def _session(
    client: redis.asyncio.Redis, server_id: int, session_id: str, member_id: int
) -> dict[str, str]:
    raw = await client.hgetall(channels.session_key(session_id))
    session = {k.decode(): v.decode() for k, v in raw.items()}
    if session.get("server") != str(server_id) or session.get("member") != str(member_id):
        raise SessionNotFound(session_id)
    return session


async def webphone_act(
    *, server_id: int, session_id: str, member_id: int, action: str, **arguments: Any
) -> dict[str, Any]:
    """Hand the page's action (offer, call, answer, hangup, hold, resume, close) to the
    gateway; only the member who opened the session, on its server, may."""
    if action not in channels.ACTIONS or action == "open":
        raise SessionNotFound(action)
    client = _client()
    try:
        await _session(client, server_id, session_id, member_id)
        return await _ask(client, server_id, session_id, action, **arguments)
    finally:
        await client.aclose()


async def webphone_follow(
    *, server_id: int, session_id: str, member_id: int
) -> AsyncIterator[Update]:
    """The session's state now, then each change; keeps the session alive while followed.

    Ends after `lost` (the gateway that holds the session is gone: crashed, restarted,
    or stopped) or `closed`; the page then opens a new session.
    """
    client = _client()
    pubsub = client.pubsub()
    try:
        session = await _session(client, server_id, session_id, member_id)
        await pubsub.subscribe(channels.events_channel(session_id))
        state = await client.get(channels.state_key(session_id))
        if state is not None:
            yield Update("state", json.loads(state))
        refreshed = seen_alive = time.monotonic()
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FOLLOW_TICK)
            if message is not None:
                data = json.loads(message["data"])
                yield Update("closed" if data.get("closed") else "state", data)
                if data.get("closed"):
                    return
            now = time.monotonic()
            if now - refreshed >= REFRESH_EVERY:
                refreshed = now
                await client.expire(channels.session_key(session_id), channels.SESSION_TTL)
                boot = await client.get(channels.alive_key(server_id))
                if boot is not None and boot.decode() == session.get("boot"):
                    seen_alive = now
                elif boot is not None or now - seen_alive >= LOST_AFTER:
                    yield Update("lost", {})  # another boot: the session died with its own
                    return
                yield Update("ping", {})
    finally:
        await pubsub.aclose()
        await client.aclose()
