"""The live calls page: what it says when the server's CDR options hide calls, and its
Server-Sent Events served by the real ASGI portal, fed by the worker's own event sink
(`sipnodes.engine.eventsink.EventSink`, the code that publishes call states)."""

import asyncio
import time

import psycopg
import pytest
import redis
from django.conf import settings
from django.urls import reverse

from sipnodes.engine.events import CallData, live_channel, make_event
from sipnodes.engine.eventsink import EventSink, RedisConnection
from sipnodes.models import VirtualServer
from tests.factories import make_member, make_tenant_with_server
from tests.portal import EventStream, session_of
from tests.sipnodes.node_host import EVENTS_REDIS_URL, database_url
from tests.sipnodes.test_live_hub import kill_live_subscriptions
from tests.support import wait_until


def page(client, server) -> str:
    response = client.get(reverse("tenants:live-calls", args=[server.pk]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_the_page_says_why_it_is_empty_when_an_option_is_off(owner_client, tenant_a):
    server = tenant_a.server
    html = page(owner_client, server)
    assert 'id="live-calls"' in html and "live-off" not in html

    VirtualServer.objects.filter(pk=server.pk).update(cdr_realtime_display=False)
    html = page(owner_client, server)
    assert "“Real-time display” is off for this server" in html
    assert "failed-cdr-off" not in html
    assert 'id="live-calls"' not in html  # no stream is opened
    assert reverse("tenants:server-settings", args=[server.pk]) in html

    VirtualServer.objects.filter(pk=server.pk).update(
        cdr_realtime_display=True, cdr_failed_calls=False
    )
    html = page(owner_client, server)
    assert "“Generate failed-call CDR” is off for this server" in html
    assert "realtime-off" not in html


@pytest.mark.django_db
def test_a_viewer_is_told_who_can_turn_the_options_on(viewer_client, tenant_a):
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(cdr_realtime_display=False)
    html = page(viewer_client, tenant_a.server)
    assert "An owner or admin of your account can turn both on" in html


class Worker:
    """The call events a worker of `server` writes, through the worker's own EventSink."""

    def __init__(self, server: VirtualServer, tmp_path) -> None:
        self.server = server
        self.sink = EventSink(
            RedisConnection(EVENTS_REDIS_URL), str(server.uid), str(tmp_path), list
        )

    def calls(self, *changes: tuple[str, str]) -> float:
        """Write each (call id, state) change of 100 calling 101; the time written."""
        now = time.time()
        self.sink.put(
            [
                make_event(CallData(call_id, "100", "101", state), self.server.pk, now)
                for call_id, state in changes
            ]
        )

        async def flush() -> bool:
            try:
                return await self.sink.flush()
            finally:
                await self.sink.redis.aclose()  # its connection belongs to this event loop

        assert asyncio.run(flush())
        return now


def events_path(server) -> str:
    return reverse("tenants:live-calls-events", args=[server.pk])


@pytest.mark.e2e
def test_calls_in_progress_then_each_change_then_catch_up_after_a_drop(portal, tmp_path, host):
    acme = make_tenant_with_server("Acme")
    session = session_of(make_member(acme.tenant, "viewer"))
    worker = Worker(acme.server, tmp_path)
    worker.calls(("a@1", "initiated"), ("b@1", "answered"))

    stream = EventStream(portal, events_path(acme.server), session)
    assert stream.status == 200 and stream.content_type == "text/event-stream"
    name, snapshot = stream.next_event()
    assert name == "snapshot"
    assert {(c["call_id"], c["state"]) for c in snapshot["calls"]} == {
        ("a@1", "initiated"),
        ("b@1", "answered"),
    }
    assert abs(snapshot["now"] - time.time()) < 5

    sent = worker.calls(("a@1", "ringing"))
    name, change = stream.next_event(timeout=1.0)  # within a second, as the page promises
    assert name == "changes"
    assert change["calls"] == [
        {
            "call_id": "a@1",
            "caller": "100",
            "callee": "101",
            "state": "ringing",
            "ts": pytest.approx(sent),
        }
    ]

    # The network drops; meanwhile b is released and c begins. A new connection (what
    # EventSource makes) gets the calls in progress again: the page greys b, adds c.
    stream.close()
    worker.calls(("b@1", "released"), ("c@1", "initiated"))
    stream = EventStream(portal, events_path(acme.server), session)
    name, snapshot = stream.next_event()
    assert name == "snapshot"
    assert {(c["call_id"], c["state"]) for c in snapshot["calls"]} == {
        ("a@1", "ringing"),
        ("c@1", "initiated"),
    }
    stream.close()


@pytest.mark.e2e
def test_open_streams_hold_no_database_connection_and_others_are_refused(portal, tmp_path, host):
    acme, globex = make_tenant_with_server("Acme"), make_tenant_with_server("Globex")
    session = session_of(make_member(acme.tenant, "viewer"))
    name = settings.DATABASES["default"]["NAME"]

    def connections() -> int:
        with psycopg.connect(database_url()) as conn:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            return conn.execute(sql, [name]).fetchone()[0]

    EventStream(portal, events_path(acme.server), session).next_event()  # warm the worker
    before = connections()
    streams = [EventStream(portal, events_path(acme.server), session) for _ in range(10)]
    for stream in streams:
        assert stream.next_event()[0] == "snapshot"
    assert connections() <= before + 1
    for stream in streams:
        stream.close()

    assert EventStream(portal, events_path(globex.server), session).status == 404
    anonymous = EventStream(portal, events_path(acme.server), "")
    assert anonymous.status == 302  # to the login page
    assert portal.get(f"/servers/{acme.server.pk}/live/events/", session="nonsense")[0] == 302


def subscriptions(server) -> int:
    """The Redis subscriptions to the server's live channel, whoever holds them."""
    client = redis.Redis.from_url(EVENTS_REDIS_URL)
    try:
        channel = live_channel(str(server.uid))
        return dict(client.pubsub_numsub(channel))[channel.encode()]
    finally:
        client.close()


def states(event: dict) -> set[tuple[str, str]]:
    return {(call["call_id"], call["state"]) for call in event["calls"]}


@pytest.mark.e2e
def test_viewers_share_one_subscription_all_get_each_change_and_the_last_one_ends_it(
    portal, tmp_path, host
):
    acme = make_tenant_with_server("Acme")
    session = session_of(make_member(acme.tenant, "viewer"))
    worker = Worker(acme.server, tmp_path)

    streams = [EventStream(portal, events_path(acme.server), session) for _ in range(5)]
    for stream in streams:
        assert stream.next_event()[0] == "snapshot"
    assert subscriptions(acme.server) == 1  # one portal process: one subscription

    worker.calls(("a@1", "initiated"), ("a@1", "ringing"))
    for stream in streams:
        name, change = stream.next_event()
        assert name == "changes"
        assert [(c["call_id"], c["state"]) for c in change["calls"]] == [
            ("a@1", "initiated"),
            ("a@1", "ringing"),
        ]

    for stream in streams:
        stream.close()
    assert wait_until(lambda: subscriptions(acme.server) == 0, 5)


@pytest.mark.e2e
def test_after_the_portals_subscription_drops_the_page_gets_the_calls_in_progress_again(
    portal, tmp_path, host
):
    """Redis keeps nothing published while the subscription is away: rather than miss a
    change, the open page is sent the calls in progress again, on the same connection."""
    acme = make_tenant_with_server("Acme")
    session = session_of(make_member(acme.tenant, "viewer"))
    worker = Worker(acme.server, tmp_path)
    stream = EventStream(portal, events_path(acme.server), session)
    name, snapshot = stream.next_event()
    assert name == "snapshot" and snapshot["calls"] == []
    worker.calls(("a@1", "initiated"))
    assert states(stream.next_event()[1]) == {("a@1", "initiated")}

    [pid] = portal.worker_pids()
    assert kill_live_subscriptions(pid) == 1
    name, snapshot = stream.next_event()
    assert name == "snapshot" and states(snapshot) == {("a@1", "initiated")}

    worker.calls(("a@1", "answered"))
    name, change = stream.next_event()
    assert name == "changes" and states(change) == {("a@1", "answered")}
    stream.close()
