"""A server's live state in Redis goes with it, and never reaches a server that reuses its id.

Real workers run the rendered config of real `VirtualServer` rows; a SIPp phone registers.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.db import connection

from sipnodes import services
from sipnodes.engine.events import live_calls_key
from sipnodes.engine.location import location_key
from sipnodes.live_state import live_state_delete, live_state_keys
from sipnodes.models import VirtualServer
from sipnodes.runtime_config import render_runtime_config
from tests.support import wait_until

from .processes import REDIS_URL, WorkerProcess, cleanup_server


def worker_of(server: VirtualServer, tmp_path: Path) -> WorkerProcess:
    """A worker on a free port, with the config the agent would render for `server`."""
    worker = WorkerProcess(tmp_path, REDIS_URL)
    rendered = render_runtime_config(
        server, redis_url=REDIS_URL, spool_dir=tmp_path / f"spool-{server.uid}"
    )
    rendered["listen"].update(sip_port=worker.port, callback_port=0)
    worker.server_id, worker.server_uid = server.pk, str(server.uid)
    worker.data = rendered
    worker.write_config()
    return worker


def reuse_id(server_id: int) -> None:
    """The next server gets `server_id` again, as a fresh database hands out id 1 again."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('sipnodes_virtualserver', 'id'), %s, false)",
            [server_id],
        )


@pytest.mark.e2e
def test_a_deleted_servers_registrations_go_and_never_reach_a_server_with_its_id(
    tenant_a, broker, settings, django_capture_on_commit_callbacks, sipp, redis_client, tmp_path
):
    settings.REDIS_URL = REDIS_URL  # the Redis the workers use
    old = tenant_a.server
    old_id, old_uid = old.pk, str(old.uid)
    _, issued = services.local_user_create(server=old, number="200")
    worker = worker_of(old, tmp_path).start()
    try:
        sipp.register(worker.port, [("200", issued.password)])
        assert wait_until(lambda: redis_client.hlen(location_key(old_uid)) == 1, 5.0)
        stale = redis_client.hgetall(location_key(old_uid))
        redis_client.hset(live_calls_key(old_uid), "left-over@h", "{}")  # a call in progress

        with django_capture_on_commit_callbacks(execute=True):
            services.server_delete(server=old)
        worker.stop()  # what the host's agent does once the deletion reaches it
        assert not any(redis_client.exists(k) for k in live_state_keys(server_uid=old_uid))

        # The same Redis with a fresh database: the old bindings are back (as if the
        # deletion had never happened), and the next server gets the same id.
        redis_client.hset(location_key(old_uid), mapping=stale)
        reuse_id(old_id)
        new = services.server_create(tenant=tenant_a.tenant, name="Another PBX")
        assert new.pk == old_id and str(new.uid) != old_uid
        services.local_user_create(server=new, number="200")
        second = worker_of(new, tmp_path).start()
        try:
            assert redis_client.hlen(location_key(str(new.uid))) == 0
            assert "restored registrations" not in second.log(), second.log()
        finally:
            second.stop()
            cleanup_server(redis_client, new.pk, str(new.uid))
        # The control: keyed as the old server was (as by id before), the new server's
        # worker would have restored the stranger's phone.
        control = worker_of(new, tmp_path)
        control.write_config(server_uid=old_uid)
        control.start()
        try:
            assert "restored registrations of 1 clients" in control.log(), control.log()
        finally:
            control.stop()
    finally:
        worker.stop()
        cleanup_server(redis_client, old_id, old_uid)


def test_deleting_the_live_state_also_takes_the_keys_of_a_config_without_uid(
    settings, redis_client
):
    settings.REDIS_URL = REDIS_URL
    server_uid = str(uuid.uuid4())
    keys = live_state_keys(server_uid=server_uid, server_id=987_654_321)
    assert keys == [
        f"sipcloud:vs:{server_uid}:loc",
        f"sipcloud:vs:{server_uid}:calls",
        f"sipcloud:vs:{server_uid}:blocked",
        "sipcloud:vs:id-987654321:loc",
        "sipcloud:vs:id-987654321:calls",
        "sipcloud:vs:id-987654321:blocked",
    ]
    for key in keys:
        redis_client.hset(key, "f", "v")
    live_state_delete(server_uid=server_uid, server_id=987_654_321)
    assert redis_client.exists(*keys) == 0


def test_an_unreachable_redis_does_not_fail_the_deletion(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    live_state_delete(server_uid=uuid.uuid4(), server_id=1)


def test_a_server_whose_state_was_deleted_is_not_touched_by_another(redis_client, settings):
    settings.REDIS_URL = REDIS_URL
    keep, drop = str(uuid.uuid4()), str(uuid.uuid4())
    redis_client.hset(location_key(keep), "100 sip:100@h", "{}")
    try:
        live_state_delete(server_uid=drop)
        assert redis_client.hlen(location_key(keep)) == 1
    finally:
        redis_client.delete(location_key(keep))
