"""Events survive Redis outages: spooled to a file in order, replayed once; live calls in a hash."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from sipnodes.engine.events import (
    STREAM_KEY,
    CallData,
    Event,
    live_calls_key,
    live_channel,
    make_event,
)
from sipnodes.engine.eventsink import EventSink, connect
from tests.factories import sample_cdr_event
from tests.support import free_port, wait_until

from .processes import event_states, stream_events

PW = {n: f"pw{n}" for n in ("100", "101")}


def spooled_types(spool: Path) -> list[str]:
    """The type of each event written whole to the spool file so far, oldest first."""
    try:
        text = spool.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    whole_lines = text.split("\n")[:-1]  # the last one may be half-written
    return [json.loads(line)["type"] for line in whole_lines if line.strip()]


def test_sink_spools_while_redis_is_down_and_replays_in_order(private_redis, tmp_path):
    async def scenario():
        sink = EventSink(connect(private_redis.url), "uid-7", str(tmp_path / "spool"), lambda: [])
        events = [sample_cdr_event(7, time.time()) for _ in range(10)]
        sink.put(events[:3])
        assert await sink.flush()
        private_redis.stop()
        sink.put(events[3:6])
        assert not await sink.flush()
        assert sink.spool.exists() and not sink.connected
        sink.put(events[6:8])
        assert not await sink.flush()
        private_redis.start()
        sink.put(events[8:])
        assert await sink.flush()
        assert not sink.spool.exists()
        await sink.close(1.0)
        return events

    events = asyncio.run(scenario())
    client = private_redis.client()
    assert [Event.from_entry(f) for _, f in client.xrange(STREAM_KEY, "-", "+")] == events


def test_the_live_calls_hash_holds_the_last_event_of_each_call_in_progress(private_redis, tmp_path):
    def call(call_id: str, state: str) -> Event:
        return make_event(CallData(call_id, "100", "101", state), 7, time.time())

    async def scenario(events: list[Event]) -> None:
        sink = EventSink(connect(private_redis.url), "uid-7", str(tmp_path / "spool"), lambda: [])
        sink.put(events)
        assert await sink.flush()
        await sink.close(1.0)

    client = private_redis.client()
    pubsub = client.pubsub()
    pubsub.subscribe(live_channel("uid-7"))
    pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    client.hset(live_calls_key("uid-7"), "left-over@h", "{}")  # from a worker that died
    events = [call("a@h", "initiated"), call("b@h", "initiated")]
    events += [call("a@h", "answered"), call("b@h", "released")]
    asyncio.run(scenario(events))

    hash_ = client.hgetall(live_calls_key("uid-7"))
    assert hash_ == {b"a@h": events[2].to_json().encode()}
    assert Event.from_json(hash_[b"a@h"].decode()).data == CallData("a@h", "100", "101", "answered")
    published = [pubsub.get_message(timeout=1.0) for _ in events]
    assert [m["data"].decode() for m in published if m] == [e.to_json() for e in events]
    pubsub.close()


@pytest.mark.e2e
def test_worker_keeps_serving_without_redis_and_loses_no_cdr(
    start_worker, sipp, private_redis, redis_client
):
    worker = start_worker(redis_url=private_redis.url)
    client = private_redis.client()
    uas_port = free_port()
    rc, out = sipp.run("register.xml", worker.port, [("101", PW["101"])], port=uas_port)
    assert rc == 0, out
    calls = 12
    uas = sipp.start_uas("uas_answer.xml", uas_port, calls=calls)
    # 12 calls at 4/s, each up for 0.3 s; Redis goes away during them and comes back.
    uac = sipp.start_uac(
        "uac_call.xml", worker.port, [("100", PW["100"])] * calls, ["-s", "101", "-r", "4"]
    )
    assert wait_until(lambda: stream_events(client, worker.server_id, "cdr"), 5.0)
    private_redis.stop()
    spool = worker.config_path.parent / f"spool-{worker.server_id}" / "events.spool"
    assert wait_until(spool.exists, 5.0), worker.log()[-2000:]
    # More calls start, ring, answer and end while Redis is down: their CDRs go to the spool.
    assert wait_until(lambda: spooled_types(spool).count("cdr") >= 3, 10.0), worker.log()[-2000:]
    private_redis.start()
    assert sipp.wait(uac) == 0 and sipp.wait(uas) == 0
    assert wait_until(lambda: len(stream_events(client, worker.server_id, "cdr")) >= calls, 10.0), (
        worker.log()[-2000:]
    )
    assert wait_until(lambda: not spool.exists(), 5.0)
    location = f"sipcloud:vs:{worker.server_uid}:loc"

    def caught_up() -> bool:  # every call's release is in the stream; bindings re-synced
        released = event_states(client, worker.server_id, "call").count("released")
        return released >= calls and client.hlen(location) == 1

    assert wait_until(caught_up, 5.0), worker.log()[-2000:]
    cdrs = [e["data"] for e in stream_events(client, worker.server_id, "cdr")]
    assert len(cdrs) == calls and len({c["uuid"] for c in cdrs}) == calls  # each once
    assert [c["release"] for c in cdrs] == sorted(c["release"] for c in cdrs)  # in order
    assert all(c["fci"] == "callTag=1;cause=16" and c["answered"] for c in cdrs)
    states = [e["data"]["state"] for e in stream_events(client, worker.server_id, "call")]
    assert states.count("released") == calls
    assert "redis unreachable" in worker.log()
    # The location table was re-synced after the outage.
    assert client.hlen(location) == 1
    assert worker.stop() == 0


@pytest.mark.e2e
def test_worker_starts_and_serves_with_redis_down(start_worker, sipp, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    worker = start_worker(redis_url=dead)
    rc, out = sipp.run("register.xml", worker.port, [("100", PW["100"])])
    assert rc == 0, out
    spool = worker.config_path.parent / f"spool-{worker.server_id}" / "events.spool"
    assert worker.stop() == 0
    lines = spool.read_text().splitlines()
    types = [json.loads(line)["type"] for line in lines]
    assert types == ["status", "registration", "status"]
