"""The purge against a real SIP host: its supervisord, node agent and workers.

The run asks the host's agent to stop each zombie's worker and deletes the server only
once the agent has reported it stopped; a login, registration or call that lands while
the run holds a server saves it.
"""

import threading

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from ops import services
from ops.models import ParkedServer, PolicyChange, PurgeRun, RunItem, Tombstone
from sipnodes.engine.location import location_key
from sipnodes.models import Cdr, LocalUser, PortAllocation, VirtualServer
from tenants.models import Tenant, User
from tests.factories import make_tenant_with_server
from tests.second_factor import verified_login
from tests.sipnodes.node_host import state_of
from tests.support import wait_for

from .conftest import WINDOW, age, make_zombie, member

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def running(*servers: VirtualServer) -> None:
    for server in servers:
        wait_for(lambda s=server: state_of(s) == "running", 30, f"{server.name} to run")


def purge(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("purge_zombies", *args, stdout=out)
    return out.getvalue()


def test_a_run_stops_the_workers_then_deletes_the_zombies_and_keeps_tombstones(node_host):
    idle = [make_zombie("Idle A"), make_zombie("Idle B", registered=None)]
    active = make_zombie("Active", called=3)
    running(*idle, active)
    Cdr.objects.create(
        server=idle[0], uuid="5b0c3f6e-95d4-4b55-9b36-1a0d8b6a7d01", call_id="c1",
        caller="100", dialed="101", started_at=timezone.now(), status=200, answered=True,
        fci="callTag=1;cause=16",
    )  # fmt: skip
    live = redis.Redis.from_url(settings.REDIS_URL)
    live.set(location_key(str(idle[0].uid)), "registrations")
    addresses = {s.pk: s.sip_address for s in idle}

    out = purge()

    assert "2 candidates, 2 purged, 0 parked, 0 notices, 0 skipped, 0 errors" in out
    assert "Purged: Idle A / Idle A PBX: No activity for 730 days" in out
    ids = [s.pk for s in idle]
    assert not VirtualServer.objects.filter(pk__in=ids).exists()
    assert not LocalUser.objects.filter(server_id__in=ids).exists()
    assert not Cdr.objects.filter(server_id__in=ids).exists()
    assert not PortAllocation.objects.filter(server_id__in=ids).exists()
    assert not ParkedServer.objects.exists()
    for server in idle:
        assert node_host.supervisor.info(f"vs-{server.pk}") is None
        assert not node_host.node.config_path(server.pk).exists()
        assert not node_host.node.program_path(server.pk).exists()
    assert not live.exists(location_key(str(idle[0].uid)))
    stones = {t.server_id: t for t in Tombstone.objects.all()}
    assert set(stones) == set(ids)
    stone = stones[idle[0].pk]
    assert (stone.tenant_name, stone.server_name) == ("Idle A", "Idle A PBX")
    assert stone.sip_address == addresses[idle[0].pk]
    assert stone.tenant == idle[0].tenant and stone.host_name == node_host.host.name
    assert stone.last_registration_at == idle[0].last_registration_at
    assert stone.last_call_at == idle[0].last_call_at
    assert stone.last_login_at is not None
    run = PurgeRun.objects.get()
    assert (run.trigger, run.state, run.candidates, run.purged) == ("command", "finished", 2, 2)
    assert state_of(active) == "running"


def test_a_dry_run_reports_and_changes_nothing(node_host):
    zombie = make_zombie("Dry")
    running(zombie)
    pid = node_host.worker_pid(zombie.pk)

    out = purge("--dry-run")

    assert "Candidate (dry run): Dry / Dry PBX: Would purge. No activity for 730 days" in out
    assert "1 candidates, 0 purged" in out
    assert VirtualServer.objects.filter(pk=zombie.pk, desired_state="running").exists()
    assert node_host.worker_pid(zombie.pk) == pid
    assert not Tombstone.objects.exists() and not ParkedServer.objects.exists()


def test_the_cap_and_limit_bound_a_run_and_the_pause_switch_stops_it(node_host, operator):
    zombies = [make_zombie(f"Cap {n}", registered=WINDOW + 10 + n) for n in range(3)]
    running(*zombies)
    services.policy_update(operator=operator, paused=True)
    assert "Skipped: paused: 0 candidates, 0 purged" in purge()
    assert VirtualServer.objects.count() == 3

    services.policy_update(operator=operator, paused=False, cap_per_run=2)
    assert "2 purged" in purge()
    assert list(VirtualServer.objects.values_list("name", flat=True)) == ["Cap 0 PBX"]

    make_zombie("Cap 3")
    assert "1 purged" in purge("--limit", "1")
    assert VirtualServer.objects.count() == 1


def test_a_worker_its_host_does_not_report_stopped_keeps_its_server(host, settings):
    """A host whose agent never answers (none runs for `host` here)."""
    settings.SIPCLOUD_PURGE_STOP_TIMEOUT = 1.0
    zombie = make_zombie("Unreachable")

    out = purge()

    assert VirtualServer.objects.filter(pk=zombie.pk, desired_state="running").exists()
    assert PortAllocation.objects.filter(server=zombie).count() == 22
    assert not ParkedServer.objects.exists() and not Tombstone.objects.exists()
    item = RunItem.objects.get()
    assert item.outcome == "skipped"
    assert item.reason == (
        "Not deleted: host test-host did not report the worker stopped within 1.0 seconds."
    )
    assert "0 purged, 0 parked, 0 notices, 1 skipped" in out


def _hold_then_write(lock: str, server: VirtualServer, write, ready, go) -> None:
    """A transaction that holds the row a login (tenant) or an ingest batch (server) locks,
    and writes its activity when told to."""
    try:
        with transaction.atomic():
            if lock == "tenant":
                Tenant.objects.select_for_update().filter(pk=server.tenant_id).exists()
            else:
                VirtualServer.objects.select_for_update(no_key=True).filter(pk=server.pk).exists()
            ready.set()
            assert go.wait(60)
            write()
    finally:
        connection.close()


def _waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("activity", ["login", "registration", "call"])
def test_activity_landing_while_the_run_holds_the_server_saves_it(node_host, activity):
    zombie = make_zombie("Saved")
    owner = User.objects.get(memberships__tenant=zombie.tenant)
    running(zombie)
    now = timezone.now()
    lock, write = {
        "login": ("tenant", lambda: User.objects.filter(pk=owner.pk).update(last_login=now)),
        "registration": (
            "server",
            lambda: VirtualServer.objects.filter(pk=zombie.pk).update(last_registration_at=now),
        ),
        "call": (
            "server",
            lambda: VirtualServer.objects.filter(pk=zombie.pk).update(last_call_at=now),
        ),
    }[activity]
    run = services.run_queue(trigger=PurgeRun.Trigger.COMMAND, dry_run=False)
    result: list[PurgeRun] = []

    def execute() -> None:
        try:
            result.append(services.run_execute(run_id=run.pk))
        finally:
            connection.close()

    purge_thread = threading.Thread(target=execute)
    purge_thread.start()
    # The run has chosen the server and asked its host to stop the worker ...
    wait_for(lambda: ParkedServer.objects.filter(server=zombie).exists(), 20, "the hold")
    ready, go = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_then_write, args=(lock, zombie, write, ready, go))
    holder.start()
    assert ready.wait(10)
    # ... and now waits for the row the login or ingest transaction holds.
    wait_for(_waiting_for_a_lock, 30, "the run (or the agent's report) to wait for the row")
    go.set()
    holder.join(30)
    purge_thread.join(60)

    assert result and result[0].state == "finished"
    item = RunItem.objects.get(run=run)
    assert item.outcome == "skipped"
    assert item.reason.startswith(
        {
            "login": "Saved: a member logged in at ",
            "registration": "Saved: a client registered at ",
            "call": "Saved: a call at ",
        }[activity]
    )
    assert not Tombstone.objects.exists() and not ParkedServer.objects.exists()
    zombie.refresh_from_db()
    assert zombie.desired_state == "running"
    running(zombie)  # the worker is back


def test_a_parked_server_comes_back_when_a_member_logs_in(node_host, operator, client):
    services.policy_update(operator=operator, grace_days=30)
    zombie = make_zombie("Parked")
    owner = User.objects.get(memberships__tenant=zombie.tenant)
    owner.set_password("a long enough secret 7")
    owner.save()
    running(zombie)
    users = set(LocalUser.objects.filter(server=zombie).values_list("number", flat=True))

    assert "1 parked" in purge()

    zombie.refresh_from_db()
    parking = ParkedServer.objects.get(server=zombie)
    assert parking.stage == "parked"
    assert (zombie.sip_port, zombie.desired_state) == (0, "stopped")
    assert not PortAllocation.objects.filter(server=zombie).exists()
    assert node_host.supervisor.info(f"vs-{zombie.pk}") is None
    assert set(LocalUser.objects.filter(server=zombie).values_list("number", flat=True)) == users
    assert "0 parked" in purge()  # the grace period is not over: nothing to do

    response = client.post(
        reverse("login"),
        {"username": owner.email, "password": "a long enough secret 7"},
        follow=True,
    )
    zombie.refresh_from_db()
    assert zombie.sip_port > 0 and zombie.desired_state == "running"
    assert PortAllocation.objects.filter(server=zombie).count() == 22
    assert not ParkedServer.objects.exists()
    page = response.content.decode()
    assert (
        "Parked PBX had been parked after a long time without use. Your login has restored "
        f"it: its worker is starting, at the new SIP address {zombie.sip_address}." in page
    )
    running(zombie)


def test_a_parked_server_is_purged_when_its_grace_period_is_over(node_host, operator):
    services.policy_update(operator=operator, grace_days=30)
    zombie = make_zombie("Expired")
    running(zombie)
    address = zombie.sip_address
    assert "1 parked" in purge()
    ParkedServer.objects.update(purge_after=timezone.now())

    assert "1 purged" in purge()

    assert not VirtualServer.objects.exists()
    assert Tombstone.objects.get().sip_address == address


def test_a_notice_goes_out_before_the_purge_in_each_members_language(host, operator):
    services.policy_update(operator=operator, notice_days=14)
    soon = make_zombie("Soon", created=WINDOW + 30, registered=WINDOW - 10, called=None)
    chinese = member(soon.tenant, logged_in=WINDOW + 5, role="admin")
    User.objects.filter(pk=chinese.pk).update(language="zh-hans")
    member(soon.tenant, logged_in=WINDOW + 5, role="viewer")

    out = purge()

    assert "1 notices" in out and "0 purged" in out
    subjects = sorted(message.subject for message in mail.outbox)
    assert subjects == [
        "Your SIP server Soon PBX will be removed",
        "您的SIP服务器 Soon PBX 将被删除",
    ]
    assert (
        "log in to sipcloud" in mail.outbox[0].body or "log in to sipcloud" in mail.outbox[1].body
    )
    mail.outbox.clear()
    assert "0 notices" in purge()  # sent once
    assert VirtualServer.objects.filter(pk=soon.pk).exists()


def test_policy_changes_are_audited_with_who_and_what(operator, client):
    verified_login(client, operator)
    response = client.post(
        reverse("ops:policy"),
        {"inactivity_days": 365, "cap_per_run": 100, "notice_days": 7, "grace_days": 0},
        follow=True,
    )
    assert "Purge policy saved." in response.content.decode()
    changes = {
        c.field: (c.old_value, c.new_value, c.changed_by) for c in PolicyChange.objects.all()
    }
    assert changes == {
        "inactivity_days": ("730", "365", operator),
        "cap_per_run": ("500", "100", operator),
        "notice_days": ("0", "7", operator),
    }
    page = client.get(reverse("ops:purge")).content.decode()
    assert "ops@example.com" in page and "inactivity_days" in page


def test_a_server_younger_than_the_window_is_left_alone_by_a_run(host):
    fresh = make_tenant_with_server("Fresh")
    age(fresh.server, created=10)
    assert "0 candidates" in purge()
