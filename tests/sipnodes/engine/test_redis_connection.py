"""The worker's own Redis connection: URL forms, pipelined replies, errors, auth and db."""

from __future__ import annotations

import asyncio

import hiredis
import pytest

from sipnodes.engine.eventsink import RedisConnection


def test_url_forms():
    conn = RedisConnection("redis://:pw@redis.example:6380/3")
    assert (conn.host, conn.port, conn.path, conn.tls) == ("redis.example", 6380, None, False)
    assert conn.setup == [("AUTH", "pw"), ("SELECT", "3")]
    conn = RedisConnection("rediss://worker:p%40ss@redis.example/0")
    assert (conn.port, conn.tls) == (6379, True)
    assert conn.setup == [("AUTH", "worker", "p@ss")]
    conn = RedisConnection("unix:///run/redis.sock?db=2")
    assert conn.path == "/run/redis.sock" and conn.setup == [("SELECT", "2")]
    assert RedisConnection("redis://127.0.0.1").setup == []
    with pytest.raises(ValueError, match="redis://"):
        RedisConnection("http://127.0.0.1:6379/0")


def test_replies_in_order_and_an_error_raised_after_the_whole_batch(private_redis):
    async def scenario() -> None:
        conn = RedisConnection(private_redis.url)
        assert await conn.execute([("HSET", "h", "a", "1"), ("HSET", "h", "b", "2")]) == [1, 1]
        assert await conn.hgetall("h") == {b"a": b"1", b"b": b"2"}
        assert await conn.hgetall("missing") == {}
        with pytest.raises(hiredis.ReplyError, match="WRONGTYPE"):
            await conn.execute([("SET", "s", "x"), ("HSET", "s", "f", "v"), ("SET", "t", "y")])
        # every command ran (no transaction), and the next batch reads its own replies
        assert await conn.execute([("GET", "t"), ("EXPIRE", "h", "60")]) == [b"y", 1]
        with pytest.raises(hiredis.ReplyError, match="WRONGTYPE"):
            await conn.execute([("SET", "u", "1"), ("HSET", "s", "f", "v")], transaction=True)
        assert await conn.execute([("DEL", "h")], transaction=True) == [1]
        await conn.aclose()

    asyncio.run(scenario())


def test_password_and_database_from_the_url(private_redis):
    admin = private_redis.client()
    admin.config_set("requirepass", "s3cret")
    try:

        async def scenario() -> None:
            conn = RedisConnection(f"redis://:s3cret@127.0.0.1:{private_redis.port}/2")
            await conn.execute([("SET", "k", "v")])
            await conn.aclose()
            with pytest.raises(hiredis.ReplyError, match="NOAUTH"):
                await RedisConnection(private_redis.url).execute([("GET", "k")])

        asyncio.run(scenario())
        admin.execute_command("AUTH", "s3cret")
        assert admin.execute_command("SELECT", "2") and admin.get("k") == b"v"
    finally:
        admin.config_set("requirepass", "")
        admin.close()


def test_an_unreachable_redis_is_an_os_error():
    async def scenario() -> None:
        conn = RedisConnection("redis://127.0.0.1:1/0")
        with pytest.raises(OSError):
            await conn.execute([("PING",)])

    asyncio.run(scenario())
