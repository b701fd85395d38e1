"""Events survive Redis outages: spooled to a file in order, replayed once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sipnodes.engine.events import STREAM_KEY, make_event
from sipnodes.engine.eventsink import EventSink, connect
from tests.support import free_port, wait_until

from .processes import stream_events

PW = {n: f"pw{n}" for n in ("100", "101")}


def test_sink_spools_while_redis_is_down_and_replays_in_order(private_redis, tmp_path):
    async def scenario():
        sink = EventSink(connect(private_redis.url), 7, str(tmp_path / "spool"), lambda: [])
        events = [make_event("cdr", 7, time.time(), {"n": i}) for i in range(10)]
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
    ids = [f[b"event_id"].decode() for _, f in client.xrange(STREAM_KEY, "-", "+")]
    assert ids == [e.event_id for e in events]


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
    time.sleep(0.8)  # more calls start, ring, answer and end while Redis is down
    private_redis.start()
    assert sipp.wait(uac) == 0 and sipp.wait(uas) == 0
    assert wait_until(lambda: len(stream_events(client, worker.server_id, "cdr")) >= calls, 10.0), (
        worker.log()[-2000:]
    )
    assert wait_until(lambda: not spool.exists(), 5.0)
    time.sleep(0.5)
    cdrs = [e["data"] for e in stream_events(client, worker.server_id, "cdr")]
    assert len(cdrs) == calls and len({c["uuid"] for c in cdrs}) == calls  # each once
    assert [c["release"] for c in cdrs] == sorted(c["release"] for c in cdrs)  # in order
    assert all(c["fci"] == "callTag=1;cause=16" and c["answered"] for c in cdrs)
    states = [e["data"]["state"] for e in stream_events(client, worker.server_id, "call")]
    assert states.count("released") == calls
    assert "redis unreachable" in worker.log()
    # The location table was re-synced after the outage.
    assert client.hlen(f"sipcloud:vs:{worker.server_id}:loc") == 1
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
