"""The portal's shared live subscriptions (`sipnodes.live_hub`): one per channel per process,
whatever the number of viewers, each message decoded once, and viewers told to read the
state again when they may have missed something. Real Redis; no portal process."""

import asyncio
import os
import uuid
from contextlib import AsyncExitStack

import pytest
import redis
import redis.asyncio

from sipnodes.live_hub import FellBehind, LiveHub, Viewer, client_name
from tests.sipnodes.node_host import EVENTS_REDIS_URL


@pytest.fixture(autouse=True)
def events_redis(settings):
    settings.REDIS_URL = EVENTS_REDIS_URL


def kill_live_subscriptions(pid: int) -> int:
    """Drop the live hub connections of process `pid`, as a network fault or a Redis
    restart would; how many there were."""
    client = redis.Redis.from_url(EVENTS_REDIS_URL)
    try:
        ids = [c["id"] for c in client.client_list(_type="pubsub") if c["name"] == client_name(pid)]
        for client_id in ids:
            client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        client.close()


def channel() -> str:
    return f"sipcloud:test:{uuid.uuid4()}:live"


class Decoder:
    """Records each batch it decodes; viewers get the batch as a tuple."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def __call__(self, batch: list[bytes]) -> tuple[bytes, ...]:
        self.batches.append(batch)
        return tuple(batch)


def hub(decoder: Decoder) -> LiveHub[tuple[bytes, ...]]:
    return LiveHub(decoder, min_interval=0, max_batch=500, backlog=100)


async def subscribers(client: redis.asyncio.Redis, name: str) -> int:
    return dict(await client.pubsub_numsub(name))[name.encode()]


async def until_unsubscribed(client: redis.asyncio.Redis, name: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while await subscribers(client, name):
        assert asyncio.get_running_loop().time() < deadline, f"{name} still subscribed"
        await asyncio.sleep(0.02)


def test_ten_viewers_share_one_subscription_and_each_message_is_decoded_once():
    async def main() -> None:
        decoder, name = Decoder(), channel()
        live = hub(decoder)
        async with redis.asyncio.Redis.from_url(EVENTS_REDIS_URL) as client, AsyncExitStack() as s:
            viewers = [await s.enter_async_context(live.subscribe(name)) for _ in range(10)]
            assert await subscribers(client, name) == 1

            await client.publish(name, b"a@1 ringing")
            got = [await viewer.get(timeout=5) for viewer in viewers]
            assert got == [(b"a@1 ringing",)] * 10
            assert decoder.batches == [[b"a@1 ringing"]]

    asyncio.run(main())


def test_the_subscription_goes_with_the_last_viewer_and_comes_back_with_the_next():
    async def main() -> None:
        name = channel()
        live = hub(Decoder())
        async with redis.asyncio.Redis.from_url(EVENTS_REDIS_URL) as client:
            async with live.subscribe(name):
                async with live.subscribe(name):
                    assert await subscribers(client, name) == 1
                assert await subscribers(client, name) == 1  # one viewer is still there
            await until_unsubscribed(client, name)

            async with live.subscribe(name) as viewer:
                assert await subscribers(client, name) == 1
                await client.publish(name, b"b@1 initiated")
                assert await viewer.get(timeout=5) == (b"b@1 initiated",)

    asyncio.run(main())


def test_a_quiet_channel_gives_none_after_the_timeout():
    async def main() -> None:
        async with hub(Decoder()).subscribe(channel()) as viewer:
            assert await viewer.get(timeout=0.05) is None

    asyncio.run(main())


def test_a_viewer_too_far_behind_is_told_so_and_then_gets_what_follows():
    async def main() -> None:
        viewer: Viewer[str] = Viewer(backlog=2)
        for item in ("one", "two", "three"):  # three batches unread: one more than allowed
            viewer.put(item)
        with pytest.raises(FellBehind):
            await viewer.get(timeout=1)
        viewer.put("four")
        assert await viewer.get(timeout=1) == "four"

    asyncio.run(main())


def test_viewers_are_told_to_read_again_when_the_subscription_was_reconnected():
    """Redis keeps nothing published while a subscriber is away: after redis-py has
    reconnected and subscribed again, the viewers may have missed changes."""

    async def main() -> None:
        name = channel()
        live = hub(Decoder())
        async with AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(live.subscribe(name)) for _ in range(3)]
            assert kill_live_subscriptions(os.getpid()) >= 1  # ours; maybe a closing one
            for viewer in viewers:
                with pytest.raises(FellBehind):
                    await viewer.get(timeout=10)

            async with redis.asyncio.Redis.from_url(EVENTS_REDIS_URL) as client:
                await client.publish(name, b"c@1 answered")
            for viewer in viewers:
                assert await viewer.get(timeout=5) == (b"c@1 answered",)

    asyncio.run(main())
